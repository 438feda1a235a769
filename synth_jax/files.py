"""Crash-safe file writes, integrity records, and the run-directory lock.

Every artifact is written to a temp file in the same directory and renamed into place, so a reader
sees a file complete or not at all (os.replace is atomic within one filesystem).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import tempfile
from typing import Any, Iterator

from synth_jax import faults
from synth_jax.errors import IntegrityError, RunDirError

MANIFEST = "manifest.json"  # {filename: {"size": int, "sha256": str}} beside the files it covers


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[Any]:
  """Opens a temp file beside `path`; on clean exit fsyncs and renames it to `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs follow the user's umask
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    faults.point("atomic_write")  # tests kill here: complete temp file, not yet renamed
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def _read_umask() -> int:
  mask = os.umask(0o022)  # the only way to read it; set back at once (import time, one thread)
  os.umask(mask)
  return mask


_UMASK = _read_umask()
MAX_NAME_BYTES = 200  # below the 255-byte file name limit of ext4/xfs/apfs, room for suffixes


def safe_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
  """A file name part for a user-given name (a class name): letters, digits, - and _ kept; if
  anything was replaced or it is too long, a short hash of the exact name is added, so two names
  never map to one file and any length or script fits the filesystem."""
  safe = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_" else "_" for ch in str(name))
  if safe == name and 0 < len(safe) <= max_bytes:
    return safe
  digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:10]
  return f"{safe[:max_bytes - 11]}-{digest}"


def write_bytes(path: str, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
  if hasattr(o, "tolist"):
    return o.tolist()
  if hasattr(o, "to_dict"):
    return o.to_dict()
  return str(o)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def file_entry(path: str) -> dict:
  """The integrity record of one file: {"size", "sha256"}."""
  return {"size": os.path.getsize(path), "sha256": sha256_file(path)}


def check_entry(path: str, entry: dict, fix: str, what: str = "", listed_in: str = MANIFEST,
                check_hash: bool = True) -> None:
  """Raises IntegrityError if `path` is missing or its size/sha256 differ from `entry`.

  The one size+sha256 check (dataset manifests, checkpoint records); `fix` ends each message.
  """
  name = f"{what} {path}" if what else path
  if not os.path.exists(path):
    raise IntegrityError(f"{name} is listed in {listed_in} but missing; {fix}")
  size = os.path.getsize(path)
  if size != entry["size"]:
    raise IntegrityError(f"{name} has {size} bytes, {entry['size']} were written (truncated or "
                         f"altered); {fix}")
  if check_hash and sha256_file(path) != entry["sha256"]:
    raise IntegrityError(f"{name} does not match its sha256 in {listed_in} (altered or corrupt); "
                         f"{fix}")


def record_file(directory: str, filename: str) -> None:
  """Adds `filename`'s size and sha256 to `directory/manifest.json` (atomically)."""
  path = os.path.join(directory, filename)
  manifest = read_manifest(directory)
  manifest[filename] = file_entry(path)
  write_json(os.path.join(directory, MANIFEST), manifest)


def read_manifest(directory: str) -> dict:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def verify_file(directory: str, filename: str, check_hash: bool = True) -> None:
  """Raises IntegrityError naming the file if it is missing, truncated or altered.

  check_hash=False compares sizes only (catches truncation; cheap for huge datasets).
  """
  entry = read_manifest(directory).get(filename)
  if entry is None:
    return  # not recorded (older artifact): nothing to check against
  check_entry(os.path.join(directory, filename), entry,
              "delete it and rerun the stage to rewrite it", check_hash=check_hash)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except OSError as e:
    return e.errno == errno.EPERM
  return True


@contextlib.contextmanager
def run_lock(run_dir: str, name: str = ".lock") -> Iterator[None]:
  """Holds `run_dir/<name>` (pid, host) for the duration; refuses if a live process holds it.

  The processes of one multi-host run each hold their own lock (`.lock.host-<i>`), so hosts that
  share the run directory do not refuse each other while a second run of host i is refused.

  A lock left by a dead process on this host is taken over. A lock from another host is honoured
  (we cannot see its processes); the message says how to clear it.
  """
  try:
    os.makedirs(run_dir, exist_ok=True)
  except OSError as e:
    raise RunDirError(f"cannot create run directory {run_dir!r} ({e.strerror}); "
                      "pass a writable --config.workdir") from None
  if not os.access(run_dir, os.W_OK):
    raise RunDirError(f"run directory {run_dir!r} is not writable; pass a writable --config.workdir")
  path = os.path.join(run_dir, name)
  me = {"pid": os.getpid(), "host": socket.gethostname()}
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          holder = json.load(f)
      except (OSError, ValueError):
        holder = {}
      same_host = holder.get("host") == me["host"]
      if holder and (not same_host or _pid_alive(int(holder.get("pid", -1)))):
        raise RunDirError(
            f"run directory {run_dir!r} is in use by pid {holder.get('pid')} on host "
            f"{holder.get('host')}; wait for it, or delete {path} if that process is gone") from None
      with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # stale: its process is dead
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    break
  else:
    raise RunDirError(f"could not take the lock {path}; delete it if no process uses {run_dir!r}")
  try:
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)
