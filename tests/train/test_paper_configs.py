"""configs/paper/*: each loads, its sweep grid builds, paper numbers sit on real cells."""
import glob
import os

import pytest

from synth_jax import config as config_lib
from synth_jax.data import registry
from synth_jax.train import report, stage, sweep as sweep_lib

PAPER = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "paper")
FILES = sorted(f for f in glob.glob(os.path.join(PAPER, "*.py")) if not f.endswith("common.py"))


def test_one_config_per_table_and_figure():
  names = {os.path.basename(f) for f in FILES}
  assert {"li_table_main.py", "li_table_dsi.py", "li_fig_volume.py", "li_fig_fewshot.py",
          "li_fig_arch.py", "yu_imagenet_scale.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_paper_config_grid(path, tmp_path):
  c = config_lib.load_config(path, [f"workdir={tmp_path}"])
  axes = sweep_lib.parse_axes(c.sweep_axes)
  grid = sweep_lib.points(c, axes)  # applies every override: unknown keys would raise here
  assert len(grid) >= 2
  cell_keys = {report.cell_key(dict(p), axes) for p, _ in grid}
  assert set(c.paper_numbers) <= cell_keys, set(c.paper_numbers) - cell_keys
  for point, cfg in grid:
    assert "{" not in cfg.synthetic, cfg.synthetic  # every template filled per point
    assert cfg.manual_dir == f"~/downloads/{cfg.dataset}", cfg.manual_dir
    spec = registry.get(cfg.dataset)                # a known dataset name
    # The trainer uses the registry entry's own splits (food101 has no test split, aircraft
    # trains on trainval, dtd/flowers/sun397 on train+validation), not a blanket train/test.
    assert stage.splits(cfg) == (spec.train_split, spec.eval_split), (point, stage.splits(cfg))
    assert cfg.workdir.startswith(str(tmp_path))
  assert "NOT FOUND" in open(path).read()           # unknown paper cells are marked


def test_main_table_numbers_match_facts():
  c = config_lib.load_config(os.path.join(PAPER, "li_table_main.py"))
  assert c.paper_numbers["method=vanilla,dataset=aircraft"] == "79.7"
  assert c.paper_numbers["method=bridged++,dataset=cars"] == "91.6"
  assert c.paper_numbers["method=bridged++,dataset=dtd"] == "72.3 ± 0.3"
  assert "mix" in c.sweep_axes[0] and "bridged_fc" in c.sweep_axes[0]


def test_registry_splits_reach_the_trainer():
  c = config_lib.load_config(os.path.join(PAPER, "li_table_main.py"))
  got = {}
  for name in ("food101", "aircraft", "dtd", "flowers", "sun397", "cars"):
    c.dataset = name
    got[name] = stage.splits(c)
  assert got == {"food101": ("train", "validation"), "aircraft": ("trainval", "test"),
                 "dtd": ("train+validation", "test"), "flowers": ("train+validation", "test"),
                 "sun397": ("train", "test"), "cars": ("train", "test")}
  c.train_split, c.test_split = "train", "validation"  # explicit splits still win
  assert stage.splits(c) == ("train", "validation")
