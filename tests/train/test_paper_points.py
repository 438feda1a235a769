"""Issue 17: the defaults that made a paper run silently wrong (one test per point at least)."""
import os

import pytest

from synth_jax import config as config_lib
from synth_jax.errors import ConfigError
from synth_jax.train import stage, state as state_lib, sweep as sweep_lib
from tests.train import helpers

PAPER = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "paper")


# ---- (2) no silent random init -------------------------------------------------------------------
def test_empty_init_refuses_to_train_before_reading_data(tmp_path):
  c = config_lib.load_config(helpers.BASE + ":method=vanilla", [f"workdir={tmp_path}"])
  c.dataset = str(tmp_path / "no_such_dataset")  # never opened: the init error comes first
  with pytest.raises(ConfigError, match=r"config.init is empty.*init=scratch"):
    stage.build(c, str(tmp_path))


def test_missing_checkpoint_and_explicit_scratch(tmp_path):
  c = config_lib.load_config(helpers.BASE + ":init=~/nope/resnet18.pth",
                             ["model=resnet:basic:1,1,1,1"])
  with pytest.raises(ConfigError, match=r"config.init='~/nope/resnet18.pth' does not exist"):
    state_lib.build_model(c, 10)
  c.init = "scratch"  # said on purpose: accepted (every tiny train test then inits randomly)
  state_lib.check_init(c)
  c.init, c.init_format = str(tmp_path), "onnx"
  with pytest.raises(ConfigError, match="init_format='onnx' is unknown"):
    state_lib.check_init(c)


def test_paper_configs_name_their_checkpoint(tmp_path):
  for name in ("li_table_main.py", "li_fig_arch.py", "yu_imagenet_scale.py"):
    c = config_lib.load_config(os.path.join(PAPER, name), [f"workdir={tmp_path}"])
    for point, cfg in sweep_lib.points(c, sweep_lib.parse_axes(c.sweep_axes)):
      assert cfg.init.startswith("~/weights/") and cfg.init != "scratch", (name, point)
      want = "timm" if cfg.model.startswith("vit") else "torchvision"
      assert cfg.init_format == want, (name, point, cfg.init_format)
      with pytest.raises(ConfigError, match="does not exist"):  # no weights here: one line
        state_lib.check_init(cfg)


# ---- (4) Li et al.'s single template is the default ----------------------------------------------
def test_default_templates_are_li_single_template():
  from synth_jax.diffusion import generate
  from synth_jax.prompts import diversify
  root = os.path.join(PAPER, "..")
  g = config_lib.load_config(os.path.join(root, "generate", "base.py"),
                             ["class_names=boeing_747,dog"])
  texts = [c["prompts"][0]["text"] for c in generate.load_classes(g).classes]
  assert texts == ["a good photo of the boeing 747", "a good photo of the dog"]
  p = config_lib.load_config(os.path.join(root, "prompts", "base.py"))
  got = diversify.class_prompts("boeing 747", ["template"], family=p.template.family,
                                extra_templates=[], dataset="aircraft")
  assert [x["text"] for x in got] == ["a good photo of the boeing 747."]  # no CLIP suffix
  assert "a good photo of" in open(os.path.join(PAPER, "li_table_main.py")).read()


# ---- done-when: every paper point resolves without training --------------------------------------
@pytest.mark.parametrize("name", sorted(f for f in os.listdir(PAPER) if f.endswith(".py")
                                        and f != "common.py"))
def test_every_paper_point_resolves(name, tmp_path, capsys):
  from synth_jax.data import registry
  c = config_lib.load_config(os.path.join(PAPER, name), [f"workdir={tmp_path}"])
  grid = sweep_lib.points(c, sweep_lib.parse_axes(c.sweep_axes))
  for point, cfg in grid:
    r = stage.resolve(cfg)
    train_split, test_split = r["splits"]
    assert all(s in registry.get(cfg.dataset).splits for s in train_split.split("+")), (name, point)
    want = (0.5,) * 3 if cfg.model.startswith("vit") else (0.485, 0.456, 0.406)
    assert tuple(r["input_norm"]["mean"]) == want, (name, point, r["input_norm"])
    if r["synthetic"]:
      assert cfg.synthetic.startswith("runs/synthetic/") and "{" not in cfg.synthetic
  sweep_lib.sweep(c, print_only=True)
  assert len(capsys.readouterr().out.strip().splitlines()) == len(grid)


def test_old_sun397_split_and_vit_auxbn_are_refused(tmp_path):
  from synth_jax.data import registry
  from synth_jax.errors import DataError
  with pytest.raises(DataError, match="'validation', which its builder"):
    registry.check_split("sun397", "train+validation")  # the audit's split: tfds has no such
  c = config_lib.load_config(os.path.join(PAPER, "yu_imagenet_scale.py") + ":model=vit_b16,"
                             "dataset=imagenet", [f"workdir={tmp_path}", "method=auxbn"])
  c.auxbn_separate_affine = False
  with pytest.raises(ConfigError, match="would equal a 50/50 mix"):
    stage.resolve(c)
  c.auxbn_separate_affine = True
  assert stage.resolve(c)["input_norm"]["mean"] == [0.5] * 3


def test_paper_grids_match_the_papers(tmp_path):
  load = lambda n: config_lib.load_config(os.path.join(PAPER, n), [f"workdir={tmp_path}"])  # noqa
  vol = dict(sweep_lib.parse_axes(load("li_fig_volume.py").sweep_axes))
  assert vol["dataset"] == ["aircraft", "cars", "food101"]
  assert [int(v) for v in vol["volume"]] == [500, 1000, 1500, 2000, 2500, 3000]
  arch = load("li_fig_arch.py")
  assert arch.volume == 2500 and arch.synthetic.endswith("_dsi_2.5k")
  yu = load("yu_imagenet_scale.py")
  assert set(dict(sweep_lib.parse_axes(yu.sweep_axes))["model"]) >= {"resnet50", "vit_b16"}
  assert tuple(yu.extra_eval) == ("imagenet_sketch", "imagenet_r")
  p = config_lib.load_config(os.path.join(PAPER, "..", "prompts", "yu.py"))
  assert p.sd.from_llm and "sd" in p.strategies
