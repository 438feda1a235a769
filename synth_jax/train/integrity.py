"""Size + sha256 of every file of every train checkpoint, checked before a restore.

Orbax commits a step atomically (temp dir + rename), so a kill never leaves a half-written step;
what it cannot see is a file truncated or altered afterwards (a full disk during a copy, a bad
sync, bit rot). `record` runs after each save, `verify` before each restore; the records live in
`<workdir>/checkpoint_manifest.json` ({step: {relative path: {"size", "sha256"}}}), outside the
directory orbax manages. A step without a record (killed between orbax's commit and `record`)
is trusted as orbax committed it.

`check_compatible` turns orbax's tree-mismatch error (pages of array values) into one line
naming the first differing parameters, for a checkpoint written by another config.
"""
from __future__ import annotations

import logging
import os

import jax

from synth_jax import io
from synth_jax.errors import IntegrityError, RunDirError

log = logging.getLogger(__name__)
MANIFEST = "checkpoint_manifest.json"


def _paths(mngr, step: int) -> tuple[str, str]:
  root = os.fspath(mngr.directory)
  return os.path.join(root, str(step)), os.path.join(os.path.dirname(root), MANIFEST)


def _read(path: str) -> dict:
  import json
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def record(mngr, step: int) -> None:
  """Records every file of checkpoint `step`; drops records of steps orbax has deleted."""
  if jax.process_index() != 0:
    return
  step_dir, manifest_path = _paths(mngr, step)
  files = {}
  for dirpath, _, names in os.walk(step_dir):
    for name in sorted(names):
      path = os.path.join(dirpath, name)
      files[os.path.relpath(path, step_dir)] = {"size": os.path.getsize(path),
                                                "sha256": io.sha256_file(path)}
  keep = {str(s) for s in mngr.all_steps()} | {str(step)}
  manifest = {k: v for k, v in _read(manifest_path).items() if k in keep}
  manifest[str(step)] = files
  io.write_json(manifest_path, manifest)


def verify(mngr, step: int) -> None:
  """Raises IntegrityError naming the first missing, truncated or altered file of `step`."""
  step_dir, manifest_path = _paths(mngr, step)
  files = _read(manifest_path).get(str(step))
  if files is None:
    log.debug("checkpoint %s has no integrity record; trusting orbax's commit", step_dir)
    return
  fix = (f"delete {step_dir} to resume from the checkpoint before it (or pass a new "
         "--config.workdir to start over)")
  for rel, entry in sorted(files.items()):
    path = os.path.join(step_dir, rel)
    if not os.path.exists(path):
      raise IntegrityError(f"checkpoint file {path} is missing; {fix}")
    size = os.path.getsize(path)
    if size != entry["size"]:
      raise IntegrityError(f"checkpoint file {path} has {size} bytes, {entry['size']} were "
                           f"written (truncated or altered); {fix}")
    if io.sha256_file(path) != entry["sha256"]:
      raise IntegrityError(f"checkpoint file {path} does not match its sha256 in {MANIFEST} "
                           f"(altered or corrupt); {fix}")


def _flat_shapes(tree) -> dict[str, tuple]:
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  return {"/".join(name(k) for k in path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_compatible(mngr, step: int, template) -> None:
  """Raises RunDirError if checkpoint `step`'s state tree differs from `template`'s (another
  model, class count, optimizer or method wrote it)."""
  import orbax.checkpoint as ocp
  from etils import epath
  step_dir, _ = _paths(mngr, step)
  # The handler (not StandardCheckpointer) reads the item's tree without a step-level warning.
  have = _flat_shapes(ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / "state"))
  want = _flat_shapes(template)
  order = lambda k: (not k.startswith("params"), k)  # noqa: E731  (weights say most)
  missing = sorted(set(want) - set(have), key=order)
  extra = sorted(set(have) - set(want), key=order)
  shaped = [f"{k} {have[k]} vs {want[k]}" for k in sorted(set(have) & set(want), key=order)
            if have[k] != want[k]]
  if not (missing or extra or shaped):
    return
  diff = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                   for what, keys in (("not in checkpoint", missing), ("only in checkpoint", extra),
                                      ("checkpoint vs config shape", shaped)) if keys)
  raise RunDirError(f"checkpoint {step_dir} was written by an incompatible config ({diff}); "
                    "rerun with the config it was written with, or pass a new --config.workdir")
