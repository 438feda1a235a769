"""Train checkpoints: integrity records (shared with invert) and a one-line config-mismatch error.

`record`/`verify` live in `synth_jax.checkpoint_integrity` (invert uses them too). `check_compatible`
turns orbax's tree-mismatch error (pages of array values) into one line naming the first differing
parameters, for a checkpoint written by another config.
"""
from __future__ import annotations

import jax

from synth_jax.checkpoint_integrity import MANIFEST, checkpoint_manager, record, step_paths, verify  # noqa: F401
from synth_jax.errors import RunDirError


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
  step_dir, _ = step_paths(mngr, step)
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
