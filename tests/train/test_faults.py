"""Resume, preemption and failure: kill -9 / SIGTERM + rerun == uninterrupted; NaN stops cleanly."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from synth_jax import runs
from synth_jax.errors import TrainingError
from synth_jax.models import weights
from synth_jax.train import loop, stage
from tests.train import helpers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return helpers.write_data(tmp_path_factory.mktemp("data"))


def _final_params(workdir):
  mngr = loop.checkpoint_manager(str(workdir), 10)
  step = mngr.latest_step()
  meta = loop.read_meta(mngr, step)
  import orbax.checkpoint as ocp
  tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return step, meta, weights.flatten(jax.device_get(tree["params"]))


def _assert_same(a, b):
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_kill9_in_each_phase_then_rerun_equals_uninterrupted(data, tmp_path):
  real, syn = data
  kw = dict(method="bridged++", steps1=4, steps2=4, checkpoint_every=2)
  runs.run_stage("train", stage.train, helpers.tiny_config(tmp_path / "ref", real, syn, **kw))
  cfg = helpers.tiny_config(tmp_path / "killed", real, syn, **kw)
  cmd = [sys.executable, "-m", "synth_jax.cli", "train", "--config", helpers.BASE + ":method=bridged++"]
  cmd += [f"--config.{k}={v}" for k, v in _flat(cfg).items()]
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1")
  # 3rd step of phase 1 (checkpoint at 2), then the 5th hit: phase 2 step 3 (checkpoint at 4+2).
  for kill_at, after in (("train_step:3", 2), ("train_step:5", 6)):
    p = subprocess.run(cmd, env=dict(env, SYNTH_JAX_KILL_AT=kill_at), capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert loop.checkpoint_manager(str(tmp_path / "killed"), 10).latest_step() == after
  p = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert p.returncode == 0, p.stderr[-2000:]
  step, meta, got = _final_params(tmp_path / "killed")
  ref_step, _, want = _final_params(tmp_path / "ref")
  assert step == ref_step == 8 and meta["phase"] == 1 and meta["phase_done"]
  _assert_same(got, want)
  # The last run trained only part of phase 1; results.json still reports both phases.
  results = [json.load(open(tmp_path / d / "results.json")) for d in ("killed", "ref")]
  assert [s["phase"] for s in results[0]["phases"]] == [0, 1]
  assert results[0]["phases"] == results[1]["phases"]


class _Killed(BaseException):
  """Stands in for SIGKILL in-process: the same files on disk, no handler in the trainer catches it."""


def _kill_at(monkeypatch, name, n):
  hits = []

  def point(p):
    hits.append(p)
    if p == name and hits.count(name) == n:
      raise _Killed(f"{name}:{n}")

  monkeypatch.setattr(loop.faults, "point", point)


@pytest.mark.slow
def test_killed_at_phase_boundary_then_rerun_trains_phase2(data, tmp_path, monkeypatch):
  # Killed after phase 0's final checkpoint, before its evaluation and before any phase-1
  # checkpoint, twice: each rerun must restore that checkpoint once and go on to train phase 1.
  real, syn = data
  kw = dict(method="bridged++", steps1=4, steps2=4, checkpoint_every=2)
  ref = runs.run_stage("train", stage.train, helpers.tiny_config(tmp_path / "ref", real, syn, **kw))
  cfg = helpers.tiny_config(tmp_path / "run", real, syn, **kw)
  for name in ("phase_end", "train_step"):  # the rerun's first train_step is phase 1's first
    _kill_at(monkeypatch, name, 1)
    with pytest.raises(_Killed):
      runs.run_stage("train", stage.train, cfg)
    step, meta, _ = _final_params(tmp_path / "run")
    assert (step, meta["phase"], meta["phase_done"]) == (4, 0, True)
    monkeypatch.undo()
  got = runs.run_stage("train", stage.train, cfg)
  step, meta, params = _final_params(tmp_path / "run")
  assert (step, meta["phase"], meta["phase_done"]) == (8, 1, True)
  _assert_same(params, _final_params(tmp_path / "ref")[2])
  # results.json reports both phases, phase 0's re-evaluated from its checkpoint, as uninterrupted.
  assert [s["phase"] for s in got["phases"]] == [0, 1]
  assert got["phases"] == ref["phases"] and got["top1"] == ref["top1"]


def _flat(cfg):
  out = {}
  for k in ("workdir", "dataset", "synthetic", "model", "init", "batch_size", "eval_batch_size", "log_every",
            "checkpoint_every", "keep_checkpoints", "tensorboard"):
    out[k] = cfg[k]
  for k in ("resolution", "min_scale"):
    out[f"augment.{k}"] = cfg.augment[k]
  for s in ("phase1", "phase2"):
    out[f"{s}.steps"], out[f"{s}.learning_rate"] = cfg[s].steps, cfg[s].learning_rate
  return out


@pytest.mark.slow
def test_sigterm_saves_and_rerun_equals_uninterrupted(data, tmp_path, monkeypatch):
  real, syn = data
  runs.run_stage("train", stage.train, helpers.tiny_config(tmp_path / "ref", real, syn, steps2=4))
  calls = []

  def sigterm_at_3(name):
    calls.append(name)
    if calls.count("train_step") == 3 and name == "train_step":
      os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets the flag; the loop saves

  monkeypatch.setattr(loop.faults, "point", sigterm_at_3)
  cfg = helpers.tiny_config(tmp_path / "run", real, syn, steps2=4)
  with pytest.raises(runs.Preempted, match="step 3"):
    runs.run_stage("train", stage.train, cfg)
  step, meta, _ = _final_params(tmp_path / "run")
  assert step == 3 and not meta["phase_done"]
  assert not (tmp_path / "run" / "results.json").exists()
  monkeypatch.undo()
  runs.run_stage("train", stage.train, cfg)
  _assert_same(_final_params(tmp_path / "run")[2], _final_params(tmp_path / "ref")[2])


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
  real, syn = data
  orig = loop.put_train_batch

  def poisoned(batch, mesh, step):
    batch = dict(batch, image=batch["image"].astype(np.float32) / 255.0)
    if step >= 4:
      batch["image"][0, 0, 0, 0] = np.nan
    return orig(batch, mesh, step)

  monkeypatch.setattr(loop, "put_train_batch", poisoned)
  cfg = helpers.tiny_config(tmp_path / "run", real, syn, steps2=6, checkpoint_every=2)
  with pytest.raises(TrainingError, match=r"step 4 .*last good checkpoint: step 2"):
    runs.run_stage("train", stage.train, cfg)
  step, meta, params = _final_params(tmp_path / "run")
  assert step == 2 and meta["phase_step"] == 2
  assert all(np.isfinite(v).all() for v in params.values())
