"""One test per row of README's "What happens when..." table that the foundation answers.

Each: exit code != 0 (or the named exception), one line naming the value and the fix, no traceback
unless --verbose, and finished outputs untouched.
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from synth_jax import files, sharding
from synth_jax.errors import IntegrityError, MeshError, WeightsError
from synth_jax.models import weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "tests", "foundation", "data", "example_config.py")
SMOKE = os.path.join(REPO, "configs", "train", "base.py") + ":smoke"  # a valid train config


def cli(*args):
  return subprocess.run([sys.executable, "-m", "synth_jax.cli", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=120)


def one_line_error(out, needle):
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr
  assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
  assert "Traceback" not in out.stderr


def test_unknown_config_key(tmp_path):
  one_line_error(cli("train", "--config", CONFIG, f"--config.workdir={tmp_path}", "--config.sed=1"),
                 "unknown config key 'sed'; did you mean seed")


def test_wrong_type_for_key(tmp_path):
  one_line_error(cli("train", "--config", CONFIG, f"--config.workdir={tmp_path}", "--config.seed=x"),
                 "config key 'seed' expects an int, got 'x'")


def test_missing_config_file():
  one_line_error(cli("train", "--config", "configs/train/nope.py"), "does not exist")


def test_traceback_only_with_verbose(tmp_path):
  out = cli("--verbose", "train", "--config", CONFIG, f"--config.workdir={tmp_path}", "--config.sed=1")
  assert out.returncode == 2 and "Traceback" in out.stderr


def test_mesh_that_does_not_fit_the_devices():
  with pytest.raises(MeshError, match=r"uses 6 devices, there are 8; set config.mesh"):
    sharding.make_mesh({"data": 3, "fsdp": 2})


def test_batch_not_divisible_by_data_devices():
  with pytest.raises(MeshError, match="batch_size=10 does not divide over 8 data-parallel devices; "
                     "use a multiple of 8"):
    sharding.check_batch(sharding.make_mesh({"data": 8}), 10)


def test_run_dir_on_read_only_path_via_cli(tmp_path):
  # /proc is read-only for everyone, root included.
  one_line_error(cli("train", "--config", SMOKE, "--config.workdir=/proc/synth_jax_run"),
                 "pass a writable --config.workdir")


def test_second_process_on_same_run_dir(tmp_path):
  run_dir = str(tmp_path / "run")
  with files.run_lock(run_dir):
    out = cli("train", "--config", SMOKE, f"--config.workdir={run_dir}")
    one_line_error(out, f"run directory '{run_dir}' is in use by pid {os.getpid()}")


def test_missing_weights_file(tmp_path):
  with pytest.raises(WeightsError, match="does not exist; check the path"):
    weights.read_tensors(str(tmp_path / "model.safetensors"))


class Payload:  # any non-tensor object needs arbitrary unpickling
  pass


def test_bin_needing_arbitrary_unpickling_is_refused(tmp_path):
  torch = pytest.importorskip("torch")
  path = tmp_path / "evil.bin"
  torch.save({"w": torch.zeros(2), "obj": Payload()}, path, pickle_module=pickle)
  with pytest.raises(WeightsError, match="refusing to load .*unpickling of arbitrary objects"):
    weights.read_tensors(str(path))


def test_weights_with_missing_and_misshaped_tensors():
  target = {"dense": {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)}, "norm": {"scale": np.ones(3)}}
  loaded = {"dense/kernel": np.zeros((3, 4)), "norm/scale": np.ones(3), "extra/w": np.ones(1)}
  with pytest.raises(WeightsError) as e:
    weights.merge_strict(target, loaded, "model.safetensors")
  msg = str(e.value)
  assert "missing: dense/bias" in msg and "unexpected: extra/w" in msg
  assert "mis-shaped: dense/kernel: file (3, 4) vs model (4, 3)" in msg


def test_truncated_or_altered_file_is_detected(tmp_path):
  d = str(tmp_path)
  files.write_bytes(os.path.join(d, "shard-0"), b"x" * 100)
  files.record_file(d, "shard-0")
  files.verify_file(d, "shard-0")
  with open(os.path.join(d, "shard-0"), "r+b") as f:
    f.truncate(50)
  with pytest.raises(IntegrityError, match="shard-0 has 50 bytes, 100 were written"):
    files.verify_file(d, "shard-0")
  files.write_bytes(os.path.join(d, "shard-0"), b"y" * 100)
  with pytest.raises(IntegrityError, match="does not match its sha256"):
    files.verify_file(d, "shard-0")


def test_safetensors_roundtrip_and_truncation(tmp_path):
  path = str(tmp_path / "w.safetensors")
  weights.write_safetensors(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3)})
  torch_st = pytest.importorskip("safetensors.numpy")
  np.testing.assert_array_equal(torch_st.load_file(path)["a"], np.arange(6).reshape(2, 3))
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 8)
  with pytest.raises(WeightsError, match="truncated"):
    weights.read_tensors(path)


def test_disk_full_while_writing(tmp_path, monkeypatch):
  """A write error mid-file leaves no partial file and the earlier complete file intact."""
  good = tmp_path / "done.json"
  files.write_json(str(good), {"ok": 1})
  real_fsync = os.fsync

  def fail(fd):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "fsync", fail)
  with pytest.raises(OSError):
    files.write_json(str(tmp_path / "next.json"), {"big": 1})
  monkeypatch.setattr(os, "fsync", real_fsync)
  assert sorted(os.listdir(tmp_path)) == ["done.json"]
  assert json.loads(good.read_text()) == {"ok": 1}


def test_disk_full_message_via_cli():
  from synth_jax import cli as cli_mod
  line = cli_mod._os_error_line(OSError(28, "No space left on device", "/runs/x/shard-3"))
  assert line == ("disk full writing '/runs/x/shard-3'; free space or point --config.workdir "
                  "elsewhere, then rerun to resume")
