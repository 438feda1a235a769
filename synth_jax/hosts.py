"""One run on several processes: jax.distributed start-up, the lost-host watchdog, host names.

The CLI calls `initialize` before anything touches a device. Where the processes come from:

  * explicit flags: `--coordinator HOST:PORT --num_processes N --process_id I` (any cluster);
  * `JAX_COORDINATOR_ADDRESS` (+ `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`) in the environment;
  * a TPU slice (`TPU_WORKER_HOSTNAMES` lists several hosts), SLURM (`SLURM_NTASKS` > 1) or
    Open MPI (`OMPI_COMM_WORLD_SIZE` > 1): jax.distributed finds its peers from that environment.

A lost host (killed, out of memory, its machine gone) must not leave the others waiting forever in
a collective: each process beats a counter in the coordination service's key-value store, and a
watchdog thread ends this process with one line naming the silent host once it has not beaten for
`lost_after_s` (jax's own heartbeat, set to twice that, is the backstop; its abort would not name
the host in a line of ours).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Mapping

from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)
_BEAT = "synth_jax/beat/"
_DONE = "synth_jax/done/"  # "ok" or "error": a host that ended is not lost
_state = {"index": 0, "count": 1, "source": "single process"}


def detect(coordinator: str | None = None, num_processes: int | None = None,
           process_id: int | None = None, env: Mapping[str, str] | None = None):
  """(where the processes come from, kwargs for jax.distributed.initialize), or None on one host."""
  env = os.environ if env is None else env
  if coordinator or num_processes is not None or process_id is not None:
    if not coordinator or num_processes is None or process_id is None:
      raise ConfigError("--coordinator, --num_processes and --process_id go together; pass all "
                        "three (e.g. --coordinator host0:1234 --num_processes 2 --process_id 0)")
    if ":" not in coordinator:
      raise ConfigError(f"--coordinator {coordinator!r} needs a port: HOST:PORT")
    if not 0 <= process_id < num_processes:
      raise ConfigError(f"--process_id {process_id} must be in 0..{num_processes - 1} "
                        f"(--num_processes {num_processes})")
    if num_processes == 1:
      return None
    return "flags", dict(coordinator_address=coordinator, num_processes=num_processes,
                         process_id=process_id)
  if env.get("JAX_COORDINATOR_ADDRESS"):
    kw = {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"]}
    for key, name in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
      if env.get(name):
        kw[key] = int(env[name])
    return "JAX_COORDINATOR_ADDRESS", kw
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "TPU slice", {}
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
    return "SLURM", {}
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return "Open MPI", {}
  return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, lost_after_s: float = 60.0,
               init_timeout_s: float = 300.0) -> bool:
  """Starts jax.distributed when several processes make up the run; a no-op on one host."""
  found = detect(coordinator, num_processes, process_id)
  if found is None:
    return False
  source, kw = found
  import jax
  try:
    jax.distributed.initialize(**kw, initialization_timeout=int(init_timeout_s),
                               heartbeat_timeout_seconds=int(max(2 * lost_after_s, 10)))
  except RuntimeError as e:
    if "already" not in str(e) and "only be called once" not in str(e):
      raise
  many = jax.process_count() > 1
  _state.update(index=jax.process_index(), count=jax.process_count(),
                source=source if many else "single process")
  _start_watchdog(lost_after_s)
  log.info("jax.distributed (%s): process %d of %d", source, _state["index"], _state["count"])
  return True


def index() -> int:
  return _state["index"]


def count() -> int:
  return _state["count"]


def tag() -> str:
  """'host 1/4' on a multi-process run, '' on one process: the prefix of every error line."""
  return f"host {_state['index']}/{_state['count']}" if _state["count"] > 1 else ""


def runtime() -> dict:
  """What config.json and results.json record about the processes and devices of this run."""
  import jax
  return {"process_count": jax.process_count(), "process_index": jax.process_index(),
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "platform": jax.default_backend(), "distributed": _state["source"]}


def any_host(flag: bool) -> bool:
  """True on every process when `flag` is true on any: a collective, so all call it together."""
  if _state["count"] == 1:
    return bool(flag)
  import numpy as np
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.array([bool(flag)]))))


def finish(ok: bool) -> None:
  """Tells the other hosts this one ended (so its silence is not a loss; an error ends them too)."""
  _stopping.set()
  client = _client() if _state["count"] > 1 else None
  if client is not None:
    try:
      client.key_value_set(f"{_DONE}{_state['index']}", "ok" if ok else "error", allow_overwrite=True)
    except Exception:  # the coordinator is gone already: nothing to tell
      pass


_stopping = threading.Event()


def blame_lost_host() -> None:
  """After a failed collective (gloo/NCCL report a dropped peer as a runtime error): give the
  watchdog time to name the lost host (it then ends this process); returns when no host is lost."""
  if _state["count"] > 1 and _watchdog["thread"] is not None:
    _watchdog["thread"].join(timeout=_watchdog["lost_after_s"] + 5)


_watchdog = {"thread": None, "lost_after_s": 0.0}


def _client():
  from jax._src import distributed  # the client jax.distributed.initialize made
  return distributed.global_state.client


def _start_watchdog(lost_after_s: float) -> None:
  client = _client()
  if client is None or _state["count"] < 2:
    return
  me, n = _state["index"], _state["count"]
  period = max(min(lost_after_s / 5, 2.0), 0.2)

  def lost(host: int, why: str) -> None:
    line = (f"error: host {me}/{n}: lost host {host} ({why}); stopping this host too. Rerun the "
            "same command on every host to resume from the last checkpoint")
    print(line, file=sys.stderr, flush=True)
    for h in logging.getLogger().handlers:  # this host's log file gets the line too
      if isinstance(h, logging.FileHandler):
        h.stream.write(line + "\n")
        h.flush()
    os._exit(1)  # the main thread may be blocked in a collective that will never finish

  def run() -> None:
    seen = {h: (None, time.monotonic()) for h in range(n) if h != me}
    beat = 0
    while not _stopping.is_set():
      beat += 1
      try:
        client.key_value_set(f"{_BEAT}{me}", str(beat), allow_overwrite=True)
      except Exception as e:  # the coordinator (host 0) is gone
        if me != 0 and not _stopping.is_set():
          lost(0, f"the coordinator stopped answering: {str(e).splitlines()[0][:120]}")
        return
      now = time.monotonic()
      for h, (value, since) in list(seen.items()):
        try:
          done = client.key_value_try_get(f"{_DONE}{h}")
        except Exception:
          done = None
        if done == "ok":
          del seen[h]
          continue
        if done is not None and not _stopping.is_set():
          lost(h, "it ended with an error; see its line or logs/host-%d.log" % h)
        try:
          current = client.key_value_try_get(f"{_BEAT}{h}")
        except Exception:
          current = None  # not beaten yet (still starting): counts as silent
        if current != value:
          seen[h] = (current, now)
        elif now - since > lost_after_s and not _stopping.is_set():
          lost(h, f"no heartbeat for {now - since:.0f} s")
      time.sleep(period)

  thread = threading.Thread(target=run, name="synth_jax-host-watchdog", daemon=True)
  _watchdog.update(thread=thread, lost_after_s=lost_after_s)
  thread.start()
