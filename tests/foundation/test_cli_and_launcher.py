import json
import os
import subprocess
import sys

import pytest

from synth_jax import cli, files
from synth_jax.errors import RunDirError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(os.path.dirname(__file__), "data", "example_config.py")


def _run(*args, **kw):
  return subprocess.run([sys.executable, "-m", "synth_jax.cli", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=120, **kw)


def test_help_lists_every_stage():
  out = _run("--help")
  assert out.returncode == 0
  for stage in ("prompts", "generate", "invert", "train", "sweep", "demo", "filter", "data"):
    assert f"    {stage}" in out.stdout


def test_unknown_subcommand():
  out = _run("fly")
  assert out.returncode == 2
  assert "invalid choice: 'fly'" in out.stderr


def test_stage_without_config_is_one_line():
  out = _run("train")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "error: synth-jax train needs --config FILE.py[:ARG] (see configs/train/ for examples)"]


def test_bad_override_fails_before_work(tmp_path):
  out = _run("train", "--config", CONFIG, f"--config.workdir={tmp_path}/w", "--config.lrr=1")
  assert out.returncode == 2
  assert "unknown config key 'lrr'; did you mean lr?" in out.stderr
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "w").exists()


def test_run_stage_writes_config_and_holds_lock(tmp_path, monkeypatch):
  seen = {}

  def fake_stage(config):
    seen["locked"] = os.path.exists(os.path.join(config.workdir, ".lock"))
    return 0

  monkeypatch.setitem(cli.STAGES, "train", ("tests.foundation.test_cli_and_launcher:_unused", ""))
  monkeypatch.setattr(cli, "_resolve", lambda target: fake_stage)
  from synth_jax import checks  # a fake stage: not train's config, so not train's validator
  monkeypatch.delitem(checks.VALIDATORS, "train")
  rc = cli.main(["train", "--config", CONFIG, f"--config.workdir={tmp_path}/run", "--config.lr=0.3"])
  assert rc == 0 and seen["locked"]
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["lr"] == 0.3
  assert not (tmp_path / "run" / ".lock").exists()


def test_second_process_refused_and_stale_lock_taken(tmp_path):
  run_dir = str(tmp_path / "run")
  with files.run_lock(run_dir):
    with pytest.raises(RunDirError, match="in use by pid"):
      with files.run_lock(run_dir):
        pass
  # A lock left by a dead process on this host is taken over.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  import socket
  with open(os.path.join(run_dir, ".lock"), "w") as f:
    json.dump({"pid": int(dead), "host": socket.gethostname()}, f)
  with files.run_lock(run_dir):
    with open(os.path.join(run_dir, ".lock")) as f:
      assert json.load(f)["pid"] == os.getpid()


def test_atomic_write_leaves_nothing_on_error(tmp_path):
  target = tmp_path / "out.bin"
  with pytest.raises(RuntimeError):
    with files.atomic_open(str(target)) as f:
      f.write(b"half")
      raise RuntimeError("boom")
  assert not target.exists() and os.listdir(tmp_path) == []


def _fake_gcloud(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "calls.jsonl"
  script = bin_dir / "gcloud"
  script.write_text(f"""#!{sys.executable}
import json, sys
with open({str(log)!r}, "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
""")
  script.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
  return env, log


def test_launcher_against_fake_gcloud(tmp_path):
  env, log = _fake_gcloud(tmp_path)
  out = subprocess.run(["bash", "launch/tpu.sh", "--tpu", "pod1", "--zone", "us-central2-b",
                        "--project", "proj", "--", "synth-jax", "train", "--config", "c.py:smoke"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert [c[:4] for c in calls] == [["compute", "tpus", "tpu-vm", "scp"]] + [
      ["compute", "tpus", "tpu-vm", "ssh"]] * 3
  for c in calls:
    assert "--zone" in c and c[c.index("--zone") + 1] == "us-central2-b"
    assert "--project" in c and c[c.index("--project") + 1] == "proj"
  scp, install, start, follow = calls
  assert "--worker=all" in scp and scp[5] == "pod1:/tmp/synth_jax_src.tgz"
  assert "--worker=all" in install and "pip install -q -r requirements-tpu.txt" in install[-1]
  assert "--worker=all" in start and "synth-jax\\ train\\ --config\\ c.py:smoke" in start[-1]
  assert "--worker=0" in follow and "tail" in follow[-1]


def test_launcher_dry_run_calls_nothing(tmp_path):
  env, log = _fake_gcloud(tmp_path)
  out = subprocess.run(["bash", "launch/tpu.sh", "--tpu", "pod1", "--zone", "z", "--dry-run", "--",
                        "synth-jax", "demo"], cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 0
  assert not log.exists()
  assert out.stdout.count("gcloud compute tpus tpu-vm") == 4


def test_launcher_requires_command():
  out = subprocess.run(["bash", "launch/tpu.sh", "--tpu", "p", "--zone", "z"], cwd=REPO,
                       capture_output=True, text=True)
  assert out.returncode == 2 and "no command given" in out.stderr
