"""The persistent XLA compilation cache: a rerun (after preemption, or the next sweep point with the
same shapes) loads its compiled programs from disk instead of compiling them again.

Set once per process, before anything compiles (`cli.main` does it for every stage, from
`config.compile_cache`). Every program is stored, however fast it compiled and however small: the
sampler and train steps dominate, but a resumed run on a pod also pays for dozens of small
programs (init, shardings, eval). Keys include the backend, the JAX/jaxlib version, the program
and its shardings, so one folder serves different machines and versions side by side.
"""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)

OFF = "off"


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "synth_jax", "xla")


def setup(path: str | None = "") -> str:
  """Points JAX's persistent cache at `path` ('' = `default_dir()`, 'off' = no cache); returns
  the folder used ('' when off). A folder that cannot be created only logs a warning: the run
  still works, it just compiles."""
  if path == OFF:
    return ""
  path = os.path.expanduser(path or default_dir())
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    log.warning("compile cache %s unusable (%s); compiling without it", path, e.strerror)
    return ""
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  log.debug("XLA compilation cache: %s", path)
  return path
