"""launch/slurm.sh against a fake sbatch/srun on PATH that record what would run."""
import json
import os
import subprocess
import sys

from tests.multihost.harness import ROOT


def _fakes(tmp_path):
  """sbatch records its options and script, then runs the script as the first node would;
  srun records its options and runs the command once per node with that node's SLURM env."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "calls.jsonl"
  (bin_dir / "sbatch").write_text(f"""#!{sys.executable}
import json, subprocess, sys
script = sys.stdin.read()
with open({str(log)!r}, "a") as f:
  f.write(json.dumps({{"tool": "sbatch", "argv": sys.argv[1:], "script": script}}) + "\\n")
nodes = [a.split("=")[1] for a in sys.argv[1:] if a.startswith("--nodes=")][0]
sys.exit(subprocess.run(["bash", "-c", script], env={{**__import__("os").environ,
                        "SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": nodes}}).returncode)
""")
  (bin_dir / "srun").write_text(f"""#!{sys.executable}
import json, os, subprocess, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as f:
  f.write(json.dumps({{"tool": "srun", "argv": args, "cwd": os.getcwd()}}) + "\\n")
nodes = int([a.split("=")[1] for a in args if a.startswith("--nodes=")][0])
command = args[args.index("bash"):]
for i in range(nodes):
  env = dict(os.environ, SLURM_NTASKS=str(nodes), SLURM_PROCID=str(i), SLURM_NODEID=str(i))
  subprocess.run(command, env=env, check=True)
""")
  for tool in ("sbatch", "srun"):
    (bin_dir / tool).chmod(0o755)
  # `synth-jax` itself is faked too: it prints what the SLURM env says this process is.
  (bin_dir / "synth-jax").write_text(f"""#!{sys.executable}
import json, os, sys
from synth_jax import hosts
with open({str(log)!r}, "a") as f:
  f.write(json.dumps({{"tool": "synth-jax", "argv": sys.argv[1:], "procid": os.environ["SLURM_PROCID"],
                      "detected": hosts.detect()[0]}}) + "\\n")
""")
  (bin_dir / "synth-jax").chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=ROOT)
  return env, log


def test_slurm_launcher_one_task_per_node_same_command(tmp_path):
  env, log = _fakes(tmp_path)
  out = subprocess.run(["bash", "launch/slurm.sh", "--nodes", "3", "--gpus-per-node", "8",
                        "--partition", "gpu", "--account", "acct", "--time", "04:00:00", "--",
                        "synth-jax", "train", "--config", "c.py:smoke", "--config.workdir=/a b"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert [c["tool"] for c in calls] == ["sbatch", "srun"] + ["synth-jax"] * 3
  sbatch, srun, *procs = calls
  assert sbatch["argv"] == ["--job-name=synth_jax", "--nodes=3", "--ntasks-per-node=1",
                            "--gpus-per-node=8", "--partition=gpu", "--account=acct",
                            "--time=04:00:00"]
  assert "#SBATCH --signal=TERM@120" in sbatch["script"]
  assert srun["argv"][:3] == ["--nodes=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
  assert srun["cwd"] == ROOT
  # The same command line on every node (quoting kept), each a SLURM task jax.distributed detects.
  assert [p["argv"] for p in procs] == [["train", "--config", "c.py:smoke", "--config.workdir=/a b"]] * 3
  assert [p["procid"] for p in procs] == ["0", "1", "2"]
  assert {p["detected"] for p in procs} == {"SLURM"}


def test_slurm_launcher_dry_run_and_refusals(tmp_path):
  env, log = _fakes(tmp_path)
  out = subprocess.run(["bash", "launch/slurm.sh", "--nodes", "2", "--dry-run", "--", "synth-jax",
                        "demo"], cwd=ROOT, env=env, capture_output=True, text=True)
  assert out.returncode == 0 and not log.exists()
  assert out.stdout.splitlines()[0] == "sbatch --job-name=synth_jax --nodes=2 --ntasks-per-node=1"
  assert "srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c synth-jax\\ demo" in out.stdout
  bad = subprocess.run(["bash", "launch/slurm.sh", "--", "synth-jax", "demo"], cwd=ROOT,
                       capture_output=True, text=True)
  assert bad.returncode == 2 and "--nodes N" in bad.stderr
  bad = subprocess.run(["bash", "launch/slurm.sh", "--nodes", "2"], cwd=ROOT, capture_output=True,
                       text=True)
  assert bad.returncode == 2 and "no command given" in bad.stderr
