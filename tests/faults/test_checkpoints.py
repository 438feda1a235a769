"""Train checkpoints: size/hash recorded at save and checked before restore; a checkpoint written
by another config is refused in one line. Fast rows use the real save/restore path (orbax + a grain
iterator) on a tiny state; the CLI row trains a tiny ResNet (slow)."""
import json
import os
import subprocess
import sys

import grain
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from synth_jax.errors import IntegrityError, RunDirError
from synth_jax.train import integrity, loop
from synth_jax.train.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _state(width):
  params = {"dense": {"kernel": jnp.ones((3, width)), "bias": jnp.zeros((width,))}}
  return TrainState.create(params, {}, optax.sgd(0.1, momentum=0.9))


def _save(workdir, steps, width=4):
  mngr = loop.checkpoint_manager(str(workdir), 10)
  it = iter(grain.MapDataset.range(8).to_iter_dataset())
  for step in steps:
    next(it)
    loop.save(mngr, step, _state(width).replace(step=jnp.int32(step)),
              {"phase": 0, "phase_step": step, "phase_done": False}, it)
  return mngr


def test_checkpoint_files_are_recorded_and_verified(tmp_path):
  mngr = _save(tmp_path, [1, 2])
  manifest = json.loads((tmp_path / integrity.MANIFEST).read_text())
  assert sorted(manifest) == ["1", "2"]
  files = manifest["2"]
  assert any(k.startswith("state/") for k in files) and "meta/metadata" in files
  for rel, entry in files.items():
    path = tmp_path / "checkpoints" / "2" / rel
    assert entry["size"] == path.stat().st_size
  assert loop.read_meta(mngr, 2)["phase_step"] == 2  # verified, then read
  restored = loop.restore(mngr, 2, _state(4))
  assert int(restored.step) == 2


def test_truncated_checkpoint_is_detected_and_named(tmp_path):
  mngr = _save(tmp_path, [1, 2])
  files = json.loads((tmp_path / integrity.MANIFEST).read_text())["2"]
  victim = max((r for r in files if r.startswith("state/")), key=lambda r: files[r]["size"])
  path = tmp_path / "checkpoints" / "2" / victim
  with open(path, "r+b") as f:
    f.truncate(files[victim]["size"] // 2)
  with pytest.raises(IntegrityError) as e:
    loop.read_meta(mngr, 2)
  msg = str(e.value)
  assert "\n" not in msg and str(path) in msg and "truncated" in msg
  assert f"delete {tmp_path / 'checkpoints' / '2'} to resume from the checkpoint before it" in msg
  # The earlier complete checkpoint is untouched and still restores.
  assert loop.read_meta(mngr, 1)["phase_step"] == 1
  assert int(loop.restore(mngr, 1, _state(4)).step) == 1


def test_altered_checkpoint_is_detected(tmp_path):
  mngr = _save(tmp_path, [1])
  path = tmp_path / "checkpoints" / "1" / "meta" / "metadata"
  data = bytearray(path.read_bytes())
  data[data.index(b"1")] = ord("7")  # same size, different bytes
  path.write_bytes(bytes(data))
  with pytest.raises(IntegrityError, match=r"meta/metadata does not match its sha256"):
    loop.read_meta(mngr, 1)


def test_checkpoint_from_incompatible_config(tmp_path):
  mngr = _save(tmp_path, [1], width=4)
  with pytest.raises(RunDirError) as e:
    loop.restore(mngr, 1, _state(6))
  msg = str(e.value)
  assert "\n" not in msg and len(msg) < 600
  assert "written by an incompatible config" in msg
  assert "params/dense/kernel (3, 4) vs (3, 6)" in msg and "pass a new --config.workdir" in msg


def test_old_records_are_pruned_with_their_checkpoints(tmp_path):
  mngr = loop.checkpoint_manager(str(tmp_path), 2)
  it = iter(grain.MapDataset.range(8).to_iter_dataset())
  for step in (1, 2, 3):
    loop.save(mngr, step, _state(4), {"phase": 0, "phase_step": step, "phase_done": False}, it)
  assert sorted(json.loads((tmp_path / integrity.MANIFEST).read_text())) == ["2", "3"]
  assert sorted(mngr.all_steps()) == [2, 3]


def _error_line(err):
  assert "Traceback" not in err
  errors = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, err[-3000:]
  return errors[0]


@pytest.mark.slow
def test_cli_resume_refuses_other_model_and_names_a_truncated_checkpoint(tmp_path):
  """Through `synth-jax train`: a resume with another model is refused (config record kept); a
  truncated checkpoint is named; deleting it as told resumes from the one before."""
  from synth_jax import config as config_lib
  from tests.train import helpers
  real, syn = helpers.write_data(tmp_path / "data")
  run = tmp_path / "run"
  cfg = helpers.tiny_config(run, real, syn, steps2=2, checkpoint_every=1)
  spec = tmp_path / "run.json"
  spec.write_text(json.dumps(config_lib.to_dict(cfg)))
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1")

  def train(*extra):
    return subprocess.run([sys.executable, "-m", "synth_jax.cli", "train", "--config",
                           f"configs/train/from_json.py:{spec}", *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  first = train()
  assert first.returncode == 0, first.stderr[-2000:]
  results = json.loads((run / "results.json").read_text())
  os.remove(run / "results.json")  # so the rerun resumes from the checkpoints
  record = {n: (run / n).read_bytes() for n in ("config.json", "config.train.json")}
  other = train("--config.model=resnet:basic:1,1,1,2")
  assert other.returncode == 2
  line = _error_line(other.stderr)
  # The run's config record refuses it before the checkpoint is opened (issue 20, rule 3);
  # loop.restore's own shape check is test_checkpoint_from_incompatible_config.
  assert f"error: {run} holds a train run with other settings ['model']" in line
  assert "pass a new --config.workdir" in line
  assert {n: (run / n).read_bytes() for n in record} == record  # the run's config record is kept
  files = json.loads((run / integrity.MANIFEST).read_text())["2"]
  victim = max((r for r in files if r.startswith("state/")), key=lambda r: files[r]["size"])
  with open(run / "checkpoints" / "2" / victim, "r+b") as f:
    f.truncate(10)
  broken = train()
  assert broken.returncode == 2
  line = _error_line(broken.stderr)
  assert f"checkpoint file {run / 'checkpoints' / '2' / victim} has 10 bytes" in line
  import shutil
  shutil.rmtree(run / "checkpoints" / "2")  # what the message says to do
  again = train()
  assert again.returncode == 0, again.stderr[-2000:]
  assert "resuming from checkpoint 1" in again.stderr
  assert json.loads((run / "results.json").read_text())["top1"] == results["top1"]


# Runs the CLI with a kill point just before orbax renames a finished temp checkpoint into place.
RUNNER = """
import sys
from orbax.checkpoint._src.path import async_path
from synth_jax import cli, faults
rename = async_path.rename
async def commit(src, dst):
  if dst.parent.name == "checkpoints":  # the step's rename (its items are renamed before it)
    faults.point("checkpoint_commit")
  return await rename(src, dst)
async_path.rename = commit
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill9_during_checkpoint_commit_and_record_then_rerun_equals_uninterrupted(tmp_path):
  """kill -9 inside orbax's commit (temp dir written, not renamed), then right after a commit
  before its size/hash record; the rerun equals an uninterrupted run bitwise."""
  from synth_jax import config as config_lib
  from synth_jax import runs
  from synth_jax.models import weights
  from synth_jax.train import stage
  from tests.train import helpers
  import jax
  import orbax.checkpoint as ocp
  real, syn = helpers.write_data(tmp_path / "data")
  ref = helpers.tiny_config(tmp_path / "ref", real, syn, steps2=4, checkpoint_every=1)
  runs.run_stage("train", stage.train, ref)
  cfg = helpers.tiny_config(tmp_path / "run", real, syn, steps2=4, checkpoint_every=1)
  spec = tmp_path / "run.json"
  spec.write_text(json.dumps(config_lib.to_dict(cfg)))
  cmd = [sys.executable, "-c", RUNNER, "train", "--config", f"configs/train/from_json.py:{spec}"]
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1")
  run = tmp_path / "run"

  def steps():
    return sorted(loop.checkpoint_manager(str(run), 10).all_steps())
  # 1: killed in checkpoint 2's commit; 2: the rerun's hits of atomic_write are config.json,
  # config.train.json, then checkpoint 2's record: killed after orbax committed it.
  for kill_at, want_steps, recorded in (("checkpoint_commit:2", [1], ["1"]),
                                        ("atomic_write:3", [1, 2], ["1"])):
    p = subprocess.run(cmd, cwd=REPO, env=dict(env, SYNTH_JAX_KILL_AT=kill_at),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == -9, p.stderr[-2000:]
    assert steps() == want_steps
    assert sorted(json.loads((run / integrity.MANIFEST).read_text())) == recorded
  p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "resuming from checkpoint 2" in p.stderr
  assert steps() == [1, 2, 3, 4]
  assert sorted(json.loads((run / integrity.MANIFEST).read_text())) == ["1", "3", "4"]

  def params(workdir):
    mngr = loop.checkpoint_manager(str(workdir), 10)
    tree = mngr.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return weights.flatten(jax.device_get(tree["params"]))
  got, want = params(run), params(tmp_path / "ref")
  assert set(got) == set(want)
  for k in got:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  assert (json.loads((run / "results.json").read_text())["top1"] ==
          json.loads((tmp_path / "ref" / "results.json").read_text())["top1"])
