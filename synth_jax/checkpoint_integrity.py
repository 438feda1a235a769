"""Size + sha256 of every file of every orbax checkpoint (train and invert), checked before a restore.

Orbax commits a step atomically (temp dir + rename), so a kill never leaves a half-written step;
what it cannot see is a file truncated or altered afterwards (a full disk during a copy, a bad
sync, bit rot). `record` runs after each save, `verify` before each restore; the records live in
`<workdir>/checkpoint_manifest.json` ({step: {relative path: {"size", "sha256"}}}), outside the
directory orbax manages. A step without a record (killed between orbax's commit and `record`)
is trusted as orbax committed it.
"""
from __future__ import annotations

import logging
import os

import jax

from synth_jax import files
from synth_jax.errors import IntegrityError

log = logging.getLogger(__name__)
MANIFEST = "checkpoint_manifest.json"


def step_paths(mngr, step: int) -> tuple[str, str]:
  root = os.fspath(mngr.directory)
  return os.path.join(root, str(step)), os.path.join(os.path.dirname(root), MANIFEST)


def _read(path: str) -> dict:
  import json
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def checkpoint_manager(workdir: str, keep: int):
  """The orbax CheckpointManager of a stage (train, invert): `<workdir>/checkpoints`, synchronous
  saves (a save returns once committed, so the integrity record that follows sees every file)."""
  import orbax.checkpoint as ocp
  opts = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                      enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=opts)


def record(mngr, step: int) -> None:
  """Records every file of checkpoint `step`; drops records of steps orbax has deleted."""
  if jax.process_index() != 0:
    return
  step_dir, manifest_path = step_paths(mngr, step)
  entries = {}
  for dirpath, _, names in os.walk(step_dir):
    for name in sorted(names):
      path = os.path.join(dirpath, name)
      entries[os.path.relpath(path, step_dir)] = files.file_entry(path)
  keep = {str(s) for s in mngr.all_steps()} | {str(step)}
  manifest = {k: v for k, v in _read(manifest_path).items() if k in keep}
  manifest[str(step)] = entries
  files.write_json(manifest_path, manifest)


def verify(mngr, step: int) -> None:
  """Raises IntegrityError naming the first missing, truncated or altered file of `step`."""
  step_dir, manifest_path = step_paths(mngr, step)
  entries = _read(manifest_path).get(str(step))
  if entries is None:
    log.debug("checkpoint %s has no integrity record; trusting orbax's commit", step_dir)
    return
  fix = (f"delete {step_dir} to resume from the checkpoint before it (or pass a new "
         "--config.workdir to start over)")
  for rel, entry in sorted(entries.items()):
    files.check_entry(os.path.join(step_dir, rel), entry, fix, what="checkpoint file",
                      listed_in=MANIFEST)


