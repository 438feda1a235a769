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
from synth_jax.errors import ConfigError, RunDirError, SynthJaxError, TrainingError

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


def run_stage(stage: str, fn: Callable[[Any], Any], config, log: bool = False) -> Any:
  """config -> validated -> run dir (locked, config.json written) -> stage function.

  The stage's registered validator (checks.VALIDATORS) runs before the run directory is created,
  and a rerun whose settings differ from the recorded ones is refused before anything is written.
  A refusal raised by the stage before it wrote any output leaves the run directory exactly as it
  was found: config records restored, folders it created removed, and (`log`: the CLI's
  `<run_dir>/logs/host-<i>.log`, opened only after validation) a log file it started removed.
  """
  from synth_jax import checks
  run_dir = workdir(config)
  checks.validate(stage, config)
  created = _first_missing(run_dir)
  before = _tree(run_dir)
  new_log = None
  if log:
    from synth_jax import hosts
    path = os.path.join(run_dir, "logs", f"host-{hosts.index()}.log")
    new_log = None if os.path.exists(path) else path
    try:
      host_log(run_dir)
    except OSError as e:  # the run directory cannot be made: say so, not which file failed first
      raise RunDirError(f"cannot create run directory {run_dir!r} ({e.strerror}); pass a "
                        "writable --config.workdir") from None
  try:
    return _run_locked(stage, fn, config, run_dir, before)
  except _Refused as r:
    if new_log:
      _drop_log(new_log)
    _remove_new_dirs(run_dir, before, created)  # after the lock is gone
    raise r.error from None


def _drop_log(path: str) -> None:
  """Detaches and deletes a host log a refused run started (it logged no work)."""
  root = logging.getLogger()
  for h in list(root.handlers):
    if isinstance(h, logging.FileHandler) and h.baseFilename == os.path.abspath(path):
      root.removeHandler(h)
      h.close()
  with contextlib.suppress(FileNotFoundError):
    os.unlink(path)


class _Refused(Exception):
  def __init__(self, error):
    super().__init__(str(error))
    self.error = error


def _run_locked(stage, fn, config, run_dir, before):
  from synth_jax import checks
  from synth_jax import hosts
  lock = ".lock" if hosts.count() == 1 else f".lock.host-{hosts.index()}"
  with files.run_lock(run_dir, lock), preemption_handler():
    names = ["config.json"] + ([f"config.{stage}.json"] if stage != "config" else [])
    previous = {n: _read_bytes(os.path.join(run_dir, n)) for n in names}
    record = config_lib.to_dict(config)
    try:
      checks.check_record(stage, record, run_dir)
      # config.json also records the processes and devices the run used (its "runtime" entry)
      config_lib.save_config(config, run_dir, runtime=hosts.runtime())
      if stage != "config":
        files.write_json(os.path.join(run_dir, f"config.{stage}.json"), record)
      return fn(config)
    except (Preempted, TrainingError):
      raise  # work ran: its outputs were made with this config
    except SynthJaxError as e:
      # A refusal before any output was written (e.g. a resume with another model, a missing
      # dataset) must not replace the record of the config that wrote the run directory's outputs
      # nor leave a record of a run that never happened. (Errors after work started keep it.)
      if _outputs(_tree(run_dir)) == _outputs(before):
        for n, data in previous.items():
          path = os.path.join(run_dir, n)
          if data is None:
            with contextlib.suppress(FileNotFoundError):
              os.unlink(path)
          elif _read_bytes(path) != data:
            files.write_bytes(path, data)
        raise _Refused(e) from None
      raise


def _tree(run_dir: str) -> dict | None:
  """{relative path: (size, mtime)} of the outputs under run_dir (config records and lock left out)."""
  if not os.path.isdir(run_dir):
    return None
  out = {}
  for root, dirs, names in os.walk(run_dir):
    rel = os.path.relpath(root, run_dir)
    for d in dirs:
      out[os.path.normpath(os.path.join(rel, d)) + os.sep] = None
    for n in names:
      if rel == "." and (n == ".lock" or (n.startswith("config.") and n.endswith(".json"))):
        continue
      if rel == "logs" and n.startswith("host-") and n.endswith(".log"):
        continue  # a log grows while a stage checks its inputs: not an output
      with contextlib.suppress(OSError):
        st = os.stat(os.path.join(root, n))
        out[os.path.normpath(os.path.join(rel, n))] = (st.st_size, st.st_mtime_ns)
  return out


def _outputs(tree: dict | None) -> dict:
  return {k: v for k, v in (tree or {}).items() if v is not None}


def _first_missing(path: str) -> str | None:
  """The topmost ancestor of `path` (itself included) that does not exist yet."""
  missing = None
  while not os.path.exists(path):
    missing, parent = path, os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def _remove_new_dirs(run_dir: str, before: dict | None, created: str | None) -> None:
  """Removes empty folders a refused run created (the run dir and its new parents included)."""
  for root, dirs, _ in os.walk(run_dir, topdown=False):
    for d in dirs:
      rel = os.path.normpath(os.path.join(os.path.relpath(root, run_dir), d)) + os.sep
      if before is None or rel not in before:
        with contextlib.suppress(OSError):
          os.rmdir(os.path.join(root, d))
  if created is None:
    return
  path = run_dir
  while True:
    try:
      os.rmdir(path)
    except OSError:
      return
    if path == created:
      return
    path = os.path.dirname(path)


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
