"""README rows for the run directory and train-level config mistakes, through the CLI.

`cli.main` runs in process (same code as `python -m synth_jax.cli`; capfd sees its stderr);
the stale-lock row runs a real second process.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
from PIL import Image

from synth_jax import cli, files
from synth_jax.data import digits
from synth_jax.errors import RunDirError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "configs", "train", "base.py")
IMPORT = os.path.join(REPO, "configs", "data", "import.py")


def _error_line(err):
  assert "Traceback" not in err
  errors = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, err
  return errors[0]


@pytest.fixture(scope="module")
def digits8(tmp_path_factory):
  return digits.write_digits(str(tmp_path_factory.mktemp("d")), name="digits8", size=8)


def _train(tmp_path, *overrides, method="vanilla"):
  return cli.main(["train", "--config", f"{TRAIN}:method={method}",
                   f"--config.workdir={tmp_path / 'run'}", "--config.batch_size=16",
                   "--config.eval_batch_size=16", "--config.init=scratch", *overrides])


def test_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()  # its pid is now free: the lock it "left" is stale
  run = tmp_path / "run"
  run.mkdir()
  (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
  for c in ("a", "b"):
    os.makedirs(tmp_path / "photos" / c)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "photos" / c / "0.png")
  out = subprocess.run(
      [sys.executable, "-m", "synth_jax.cli", "data", "import", "--config", IMPORT,
       f"--config.data.source={tmp_path / 'photos'}", f"--config.workdir={run}"],
      capture_output=True, text=True, cwd=REPO, timeout=120,
      env=dict(os.environ, SYNTH_JAX_NO_PROGRESS="1"))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and "in use" not in out.stderr
  assert json.loads((run / "data_import.json").read_text())["counts"] == {"train": 2}
  assert not (run / ".lock").exists()  # taken over, then released


def test_lock_held_on_another_host_is_honoured(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / ".lock").write_text(json.dumps({"pid": 1234, "host": "tpu-vm-7"}))
  with pytest.raises(RunDirError) as e:
    with files.run_lock(str(run)):
      pass
  assert str(e.value) == (f"run directory '{run}' is in use by pid 1234 on host tpu-vm-7; wait "
                          f"for it, or delete {run / '.lock'} if that process is gone")
  assert json.loads((run / ".lock").read_text())["host"] == "tpu-vm-7"  # left alone


def test_stage_without_config(capfd):
  assert cli.main(["train"]) == 2
  line = _error_line(capfd.readouterr().err)
  assert line == ("error: synth-jax train needs --config FILE.py[:ARG] (see configs/train/ for "
                  "examples)")


def test_train_dataset_not_found(tmp_path, capfd):
  assert _train(tmp_path, f"--config.dataset={tmp_path / 'digts'}") == 2
  line = _error_line(capfd.readouterr().err)
  assert f"dataset '{tmp_path / 'digts'}' is not in the registry" in line
  assert "pass a dataset directory" in line


def test_unknown_model_name(tmp_path, capfd, digits8):
  assert _train(tmp_path, f"--config.dataset={digits8}", "--config.model=resnet51") == 2
  line = _error_line(capfd.readouterr().err)
  assert line.startswith("error: config.model='resnet51' is unknown; use resnet18..resnet152")
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_method_needs_synthetic_data(tmp_path, capfd, digits8):
  assert _train(tmp_path, f"--config.dataset={digits8}", method="bridged") == 2
  line = _error_line(capfd.readouterr().err)
  assert line == ("error: method 'bridged' needs synthetic images; pass --config.synthetic=DIR "
                  "(the generate stage's dataset)")
