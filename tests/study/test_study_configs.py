"""Every configs/study file resolves (issue 19, point 3), and its prompts speak the generator's
caption language (synth_jax/data/digit_styles.py)."""
import json
import os

import pytest

from synth_jax import config as config_lib
from synth_jax.data import digit_styles, digits
from synth_jax.prompts import templates
from synth_jax.train import stage, state as state_lib, sweep as sweep_lib

STUDY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "study")
SWEEPS = ("li_methods", "li_volume", "li_fewshot", "li_dsi", "yu_prompts", "yu_auxbn", "yu_finetune")


@pytest.mark.parametrize("name", SWEEPS)
def test_study_sweep_resolves(name, tmp_path):
  c = config_lib.load_config(os.path.join(STUDY, f"{name}.py") + f":root={tmp_path}")
  grid = sweep_lib.points(c, sweep_lib.parse_axes(c.sweep_axes))
  assert sorted({cfg.seed for _, cfg in grid}) == [0, 1, 2]
  for point, cfg in grid:
    assert cfg.dataset == f"{tmp_path}/data/digits_target/1.0.0" and cfg.test_split == "test"
    assert "{" not in cfg.synthetic and cfg.synthetic.startswith(f"{tmp_path}/gen/")
    assert cfg.synthetic_set in ("template", "dsi", "diversified", "finetuned")
    assert cfg.synthetic == f"{tmp_path}/gen/{cfg.synthetic_set}/synthetic/1.0.0"
    assert cfg.workdir.startswith(f"{tmp_path}/{name}/points/")
    assert stage.plan(cfg), point      # a method the trainer knows
    state_lib.check_init(cfg)          # scratch, said on purpose


def test_study_grid_sizes():
  n = {}
  for name in SWEEPS:
    c = config_lib.load_config(os.path.join(STUDY, f"{name}.py"))
    n[name] = len(sweep_lib.points(c, sweep_lib.parse_axes(c.sweep_axes)))
  assert n == {"li_methods": 18, "li_volume": 12, "li_fewshot": 24, "li_dsi": 6, "yu_prompts": 6,
               "yu_auxbn": 6, "yu_finetune": 6}
  c = config_lib.load_config(os.path.join(STUDY, "li_volume.py"))
  vols = sorted({cfg.volume for _, cfg in sweep_lib.points(c, sweep_lib.parse_axes(c.sweep_axes))})
  assert vols == [c.shots, 2 * c.shots, 4 * c.shots, 8 * c.shots]  # 1x to 8x the real per class


def test_stage_configs_resolve_and_prompts_use_the_caption_language(tmp_path):
  for s in ("template", "diversified", "dsi", "finetuned"):
    g = config_lib.load_config(os.path.join(STUDY, "generate.py") + f":set={s},root={tmp_path}")
    assert g.workdir == f"{tmp_path}/gen/{s}" and g.resolution == 0 and g.images_per_class == 80
  g = config_lib.load_config(os.path.join(STUDY, "generate.py") + ":set=template")
  assert g.template.format("three") == digit_styles.caption(None, "three")
  inv = config_lib.load_config(os.path.join(STUDY, "invert.py"))
  assert inv.shots == 10 and inv.init_word in digit_styles.NAMED_STYLES
  ft = config_lib.load_config(os.path.join(STUDY, "finetune.py"))
  assert ft.shots == 10 and ft.dataset.endswith("digits_target/1.0.0")
  assert inv.resolution == ft.resolution == 16  # the shipped generator's own size
  # Yu: every SD / CD prompt the answers file yields is a caption the generator was trained on.
  p = config_lib.load_config(os.path.join(STUDY, "prompts.py") + ":set=diversified")
  with open(p.llm.path) as f:
    answers = json.load(f)
  assert sorted(answers) == sorted(digits.CLASS_NAMES)
  captions = {digit_styles.caption(s, n, ctx) for n in digits.CLASS_NAMES
              for s in (None,) + digit_styles.NAMED_STYLES for ctx in digit_styles.CONTEXTS}
  for name, a in answers.items():
    assert len(a["styles"]) >= p.sd.n and len(a["contexts"]) >= p.cd.n
    for style in a["styles"]:
      assert templates.sd_prompt(name, style, p.sd.template) in captions, style
    for ctx in a["contexts"]:
      assert templates.cd_prompt(name, ctx, p.cd.template) in captions, ctx
  d = config_lib.load_config(os.path.join(STUDY, "prompts.py") + ":set=dsi")
  assert templates.dsi_prompt("three", d.dsi.token, d.dsi.template) == f"a {inv.token} digit three"
  assert d.dsi.token == inv.token
