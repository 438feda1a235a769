"""Runs a real `synth-jax` command as N jax.distributed processes on localhost.

Each process gets its own fake CPU devices (`devices_per_process`), so N processes x D devices
make the same global mesh as one process with N*D devices: the reference every multihost test
compares against. Processes are started with the CLI's own flags (--coordinator, --num_processes,
--process_id), exactly as a user on a cluster without a detected environment would.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class Result:
  returncode: int
  stdout: str
  stderr: str


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def env(devices: int, **extra) -> dict:
  e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "TPU_", "JAX_C"))}
  e.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
           PYTHONPATH=ROOT, SYNTH_JAX_NO_PROGRESS="1", CUDA_VISIBLE_DEVICES="",
           TF_CPP_MIN_LOG_LEVEL="3")
  e.update({k: str(v) for k, v in extra.items()})
  return e


def start(args: list[str], processes: int, devices_per_process: int, *, lost_after: float = 20,
          env_per_process=None, **extra_env) -> list[subprocess.Popen]:
  """Starts `synth-jax ARGS` as `processes` processes (one plain process when 1)."""
  port = free_port()
  procs = []
  for i in range(processes):
    cmd = [sys.executable, "-m", "synth_jax.cli", *args]
    if processes > 1:
      cmd += ["--coordinator", f"localhost:{port}", "--num_processes", str(processes),
              "--process_id", str(i), "--lost_after", str(lost_after), "--init_timeout", "240"]
    e = env(devices_per_process, **extra_env, **((env_per_process or {}).get(i, {})))
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  return procs


def wait(procs, timeout: float = 600) -> list[Result]:
  deadline = time.monotonic() + timeout
  out = []
  try:
    for p in procs:
      o, e = p.communicate(timeout=max(deadline - time.monotonic(), 1))
      out.append(Result(p.returncode, o, e))
  finally:
    for p in procs:  # never leave a process of ours behind (a hang is a failure, not a zombie)
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()
  return out


def run(args: list[str], processes: int, devices_per_process: int, timeout: float = 600,
        **kw) -> list[Result]:
  """Runs to the end; asserts every process exited 0 (showing the failing one's stderr)."""
  results = wait(start(args, processes, devices_per_process, **kw), timeout)
  for i, r in enumerate(results):
    assert r.returncode == 0, f"process {i} exited {r.returncode}:\n{r.stderr[-3000:]}"
  return results
