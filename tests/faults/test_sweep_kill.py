"""Sweep kill -9 + rerun == uninterrupted: finished points are kept (not retrained), the killed
point resumes from its checkpoint, and every point's weights and the report come out identical.
(Train alone: tests/train/test_faults.py covers kill -9 in each phase and SIGTERM.)"""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax.models import weights
from synth_jax.train import loop
from tests.train import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POINTS = ("seed=0", "seed=1")


def _sweep_cmd(tmp_path, data, name):
  real, syn = data
  c = helpers.tiny_config(tmp_path / name, real, syn, method="vanilla", steps2=2,
                          checkpoint_every=1)
  spec = tmp_path / f"{name}.json"
  spec.write_text(json.dumps(config_lib.to_dict(c)))
  return [sys.executable, "-m", "synth_jax.cli", "sweep", "--config",
          f"configs/train/from_json.py:{spec}", "--sweep", "seed=0,1"]


def _run(cmd, kill_at=None):
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1")
  if kill_at:
    env["SYNTH_JAX_KILL_AT"] = kill_at
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _params(point_dir):
  import orbax.checkpoint as ocp
  mngr = loop.checkpoint_manager(str(point_dir), 10)
  step = mngr.latest_step()
  tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return step, weights.flatten(jax.device_get(tree["params"]))


def _results(point_dir):
  res = json.loads((point_dir / "results.json").read_text())
  return {k: res[k] for k in ("top1", "top5", "mean_per_class", "per_class", "steps", "phases")}


@pytest.mark.slow
def test_sweep_kill9_then_rerun_equals_uninterrupted(tmp_path):
  data = helpers.write_data(tmp_path / "data")
  ref = _run(_sweep_cmd(tmp_path, data, "ref"))
  assert ref.returncode == 0, ref.stderr[-2000:]
  cmd = _sweep_cmd(tmp_path, data, "killed")
  # Hits 1-2 are point seed=0's steps; hit 4 is seed=1's step 2, after its step-1 checkpoint.
  killed = _run(cmd, kill_at="train_step:4")
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  first = tmp_path / "killed" / "points" / POINTS[0]
  assert (first / "results.json").exists()
  assert not (tmp_path / "killed" / "points" / POINTS[1] / "results.json").exists()
  second = tmp_path / "killed" / "points" / POINTS[1]
  assert loop.checkpoint_manager(str(second), 10).latest_step() == 1
  stamp = (first / "results.json").stat().st_mtime_ns
  again = _run(cmd)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "finished, skipped" in again.stderr and "resuming from checkpoint 1" in again.stderr
  assert (first / "results.json").stat().st_mtime_ns == stamp  # the finished point is untouched
  for point in POINTS:
    got_dir, want_dir = tmp_path / "killed" / "points" / point, tmp_path / "ref" / "points" / point
    (step, got), (ref_step, want) = _params(got_dir), _params(want_dir)
    assert step == ref_step == 2 and set(got) == set(want)
    for k in got:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f"{point} {k}")
    assert _results(got_dir) == _results(want_dir)
  assert ((tmp_path / "killed" / "results.md").read_text() ==
          (tmp_path / "ref" / "results.md").read_text())
