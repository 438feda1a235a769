"""Run-directory plumbing shared by every stage: lock, resolved config, preemption, progress, logging."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable, Iterator

from synth_jax import config as config_lib
from synth_jax import files
from synth_jax.errors import ConfigError, RunDirError, SynthJaxError

_stop = threading.Event()


class Preempted(SynthJaxError):
  """Raised by a stage after it saved its state because SIGTERM arrived; the CLI exits 0."""


def should_stop() -> bool:
  """True once SIGTERM (preemption) has been received; loops save a checkpoint and raise Preempted."""
  return _stop.is_set()


def request_stop() -> None:
  _stop.set()


@contextlib.contextmanager
def preemption_handler() -> Iterator[None]:
  """Turns SIGTERM into `should_stop()` for the duration (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _stop.clear()
  previous = signal.signal(signal.SIGTERM, lambda *_: _stop.set())
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def workdir(config) -> str:
  path = config.get("workdir")
  if not path:
    raise ConfigError("config.workdir is empty; pass --config.workdir=PATH for the run directory")
  return os.path.abspath(os.path.expanduser(path))


def run_stage(stage: str, fn: Callable[[Any], Any], config) -> Any:
  """config -> run dir (locked, config.json written) -> stage function, with SIGTERM handled."""
  from synth_jax import hosts
  run_dir = workdir(config)
  lock = ".lock" if hosts.count() == 1 else f".lock.host-{hosts.index()}"
  with files.run_lock(run_dir, lock), preemption_handler():
    names = ["config.json"] + ([f"config.{stage}.json"] if stage != "config" else [])
    previous = {n: _read_bytes(os.path.join(run_dir, n)) for n in names}
    # config.json also records the processes and devices the run used (its "runtime" entry).
    files.write_json(os.path.join(run_dir, "config.json"),
                     {**config_lib.to_dict(config), "runtime": hosts.runtime()})
    if stage != "config":
      files.write_json(os.path.join(run_dir, f"config.{stage}.json"), config_lib.to_dict(config))
    try:
      return fn(config)
    except (ConfigError, RunDirError):
      # A refused config (e.g. a resume with another model) must not replace the record of
      # the config that wrote the run directory's outputs. (Errors after work started, e.g. a
      # NaN loss, keep the new record: its checkpoints were written with it.)
      for n, data in previous.items():
        if data is not None:
          files.write_bytes(os.path.join(run_dir, n), data)
      raise


def _read_bytes(path: str) -> bytes | None:
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    return None


def _log_format() -> str:
  from synth_jax import hosts  # not jax.process_index(): that would start the backend
  return f"%(asctime)s [p{hosts.index()}] %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = False) -> None:
  """absl-style logging with the process index; only process 0 logs to the terminal (the others
  write `<workdir>/logs/host-<i>.log`, see `host_log`). Call it after `hosts.initialize`."""
  from synth_jax import hosts
  handlers = [logging.StreamHandler(sys.stderr) if hosts.index() == 0 else logging.NullHandler()]
  logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=_log_format(),
                      handlers=handlers, force=True)
  for noisy in ("absl", "jax._src", "orbax", "tensorflow", "h5py", "matplotlib", "PIL", "urllib3"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def host_log(run_dir: str) -> str:
  """Adds `<run_dir>/logs/host-<i>.log` (appended across reruns) to the root logger; its path."""
  from synth_jax import hosts
  path = os.path.join(run_dir, "logs", f"host-{hosts.index()}.log")
  root = logging.getLogger()
  for h in root.handlers:
    if isinstance(h, logging.FileHandler) and h.baseFilename == os.path.abspath(path):
      return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  handler = logging.FileHandler(path)  # a log, appended, not an atomic artifact
  handler.setFormatter(logging.Formatter(_log_format()))
  root.addHandler(handler)
  return path


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", initial: int = 0, **kw):
  """A tqdm bar with a rate, shown on process 0 only (others get a silent one)."""
  from tqdm.auto import tqdm
  try:
    import jax
    main = jax.process_index() == 0
  except Exception:
    main = True
  disable = not main or os.environ.get("SYNTH_JAX_NO_PROGRESS") == "1"
  return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
              dynamic_ncols=True, mininterval=0.5, **kw)
