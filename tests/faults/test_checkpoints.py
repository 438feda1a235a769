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
              {"stage": 0, "stage_step": step, "stage_done": False}, it)
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
  assert loop.read_meta(mngr, 2)["stage_step"] == 2  # verified, then read
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
  assert loop.read_meta(mngr, 1)["stage_step"] == 1
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
    loop.save(mngr, step, _state(4), {"stage": 0, "stage_step": step, "stage_done": False}, it)
  assert sorted(json.loads((tmp_path / integrity.MANIFEST).read_text())) == ["2", "3"]
  assert sorted(mngr.all_steps()) == [2, 3]
