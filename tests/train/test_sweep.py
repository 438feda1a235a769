"""Sweeps: axes, templates, skip finished points on rerun, results.md (mean ± std), plot, launch lines."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synth_jax import config as config_lib
from synth_jax.errors import ConfigError, TrainingError
from synth_jax.train import sweep as sweep_lib
from tests.train import helpers

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _config(workdir):
  c = config_lib.load_config(helpers.BASE + ":method=vanilla,dataset=digits,init=scratch")
  c.workdir = str(workdir)
  # Every point is validated before the first runs (issue 20): the paths must exist.
  syn = os.path.join(os.path.dirname(str(workdir)), "syn")
  for v in (10, 50, "{volume}"):  # "{volume}": a sweep without that axis leaves it as is
    os.makedirs(os.path.join(syn, f"{{dataset}}_{v}"), exist_ok=True)
  c.synthetic = os.path.join(syn, "{dataset}_{volume}")
  return c


def _fake_train(calls):
  """Deterministic stand-in: accuracy = f(method, volume, seed); records every call."""
  def train(cfg):
    calls.append(cfg.workdir)
    top1 = {"vanilla": 0.5, "bridged++": 0.7}[cfg.method] + cfg.volume / 1000 + 0.01 * cfg.seed
    out = {"top1": top1, "top5": min(1.0, top1 + 0.2), "synthetic": cfg.synthetic}
    with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
      json.dump(out, f)
    return out
  return train


def test_parse_axes_and_errors():
  assert sweep_lib.parse_axes(["method=a,b", "--config.phase2.learning_rate=0.1, 0.01"]) == [
      ("method", ["a", "b"]), ("phase2.learning_rate", ["0.1", "0.01"])]
  for bad in (["method"], ["=a"], ["seed="], ["seed=0", "seed=1"]):
    with pytest.raises(ConfigError):
      sweep_lib.parse_axes(bad)


def test_unknown_axis_key_fails_before_any_run(tmp_path):
  calls = []
  with pytest.raises(ConfigError, match="methd"):
    sweep_lib.sweep(_config(tmp_path), ["methd=vanilla"], train_fn=_fake_train(calls))
  assert calls == []


def test_sweep_runs_grid_skips_finished_and_reports(tmp_path):
  calls = []
  axes = ["method=vanilla,bridged++", "volume=10,50", "seed=0,1,2"]
  out = sweep_lib.sweep(_config(tmp_path), axes, train_fn=_fake_train(calls))
  assert len(calls) == 12 and len(out["points"]) == 12
  # Each point has its own workdir, its overrides and its templated synthetic path.
  point = tmp_path / "points" / "method=bridged++,volume=50,seed=2"
  res = json.loads((point / "results.json").read_text())
  assert res["synthetic"].endswith("syn/{dataset}_50")  # volume is an axis (filled), dataset is not
  cfg = json.loads((point / "config.json").read_text())
  assert cfg["method"] == "bridged++" and cfg["volume"] == 50 and cfg["seed"] == 2
  # Rerun: every point is finished, nothing trains again.
  sweep_lib.sweep(_config(tmp_path), axes, train_fn=_fake_train(calls))
  assert len(calls) == 12
  # A deleted point is the only one rerun.
  os.remove(point / "results.json")
  sweep_lib.sweep(_config(tmp_path), axes, train_fn=_fake_train(calls))
  assert calls[12:] == [str(point)]
  # results.md: mean ± sample std over the 3 seeds, in %.
  md = (tmp_path / "results.md").read_text()
  expect = np.array([0.7 + 0.05 + 0.01 * s for s in range(3)]) * 100
  assert f"| bridged++ | 50 | {expect.mean():.2f} ± {expect.std(ddof=1):.2f} |" in md
  summary = json.loads((tmp_path / "results.json").read_text())
  assert len(summary["cells"]) == 4 and all(c["n"] == 3 for c in summary["cells"])
  img = Image.open(tmp_path / "accuracy.png")
  assert img.format == "PNG" and img.size[0] > 100


def test_paper_numbers_beside_cells_and_failed_points(tmp_path):
  calls = []
  c = _config(tmp_path)
  c.paper_numbers = {"method=vanilla": "79.7", "method=bridged++": "85.2"}

  def flaky(cfg):
    if cfg.method == "bridged++" and cfg.seed == 1:
      raise TrainingError("non-finite loss at step 3")
    return _fake_train(calls)(cfg)

  with pytest.raises(TrainingError, match="1 of 4 sweep points failed"):
    sweep_lib.sweep(c, ["method=vanilla,bridged++", "seed=0,1"], train_fn=flaky)
  md = (tmp_path / "results.md").read_text()
  assert "| vanilla | 50.40 ± 0.71 | " in md and "| 79.7 |" in md and "| 85.2 |" in md
  assert "non-finite loss at step 3" in md  # the failed point is listed, the rest reported


def test_print_only_lines_load_the_exact_point_config(tmp_path, capsys):
  calls = []
  c = _config(tmp_path)
  c.dataset, c.init = "digits", "scratch"  # --print-only resolves each point first
  sweep_lib.sweep(c, ["method=vanilla,bridged++", "phase2.learning_rate=0.5"], print_only=True,
                  train_fn=_fake_train(calls))
  lines = capsys.readouterr().out.strip().splitlines()
  assert calls == [] and len(lines) == 2
  assert all(line.startswith("synth-jax train --config ") for line in lines)
  spec = lines[1].split("--config ", 1)[1].strip("'")
  assert os.path.isabs(spec) and "configs/train/from_json.py:" in spec  # runnable from any cwd
  cfg = config_lib.load_config(spec)
  assert cfg.method == "bridged++" and cfg.phase2.learning_rate == 0.5
  assert cfg.workdir.endswith("method=bridged++,phase2.learning_rate=0.5")


@pytest.mark.slow
def test_cli_sweep_with_real_trainer_skips_finished_points(tmp_path):
  """`synth-jax sweep` end to end on tiny digits: 2 points train, the rerun trains none."""
  real, syn = helpers.write_data(tmp_path / "data")
  c = helpers.tiny_config(tmp_path / "grid", real, syn, method="vanilla", steps2=3)
  spec = str(tmp_path / "grid.json")
  with open(spec, "w") as f:
    json.dump(config_lib.to_dict(c), f)
  cmd = [sys.executable, "-m", "synth_jax.cli", "sweep", "--config", f"configs/train/from_json.py:{spec}",
         "--sweep", "seed=0,1"]
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1")
  first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-2000:]
  done = sorted((tmp_path / "grid" / "points").glob("*/results.json"))
  assert len(done) == 2
  stamps = [p.stat().st_mtime_ns for p in done]
  second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert second.returncode == 0, second.stderr[-2000:]
  assert [p.stat().st_mtime_ns for p in done] == stamps
  assert second.stderr.count("finished, skipped") == 2
  assert "| vanilla |" not in (tmp_path / "grid" / "results.md").read_text()  # method is no axis
  assert "seeds" in (tmp_path / "grid" / "results.md").read_text()
