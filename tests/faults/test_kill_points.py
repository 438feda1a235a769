"""The crash-point mechanism itself, and that an atomic write killed before its rename leaves
the previous complete file and no partial one."""
import os
import subprocess
import sys

SCRIPT = """
import sys
from synth_jax import files
for i in range(3):
  files.write_text(sys.argv[1] + f"/part-{i}", "complete " * 1000)
"""


def test_kill_during_third_write_keeps_first_two(tmp_path):
  env = dict(os.environ, SYNTH_JAX_KILL_AT="atomic_write:3")
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env)
  assert out.returncode == -9
  visible = sorted(f for f in os.listdir(tmp_path) if not f.startswith("."))
  assert visible == ["part-0", "part-1"]
  for f in visible:
    assert (tmp_path / f).read_text() == "complete " * 1000
  # The rerun completes and leaves exactly what an uninterrupted run leaves.
  subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], check=True)
  assert sorted(f for f in os.listdir(tmp_path) if not f.startswith(".")) == [
      "part-0", "part-1", "part-2"]


def test_no_kill_without_env(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "SYNTH_JAX_KILL_AT"}
  subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, check=True)
  assert len([f for f in os.listdir(tmp_path) if not f.startswith(".")]) == 3
