"""Orbax checkpoints of a training run: state, data iterator and where the run is.

One CheckpointManager under `<workdir>/checkpoints`, numbered by the global optimizer step (the
steps of finished stages plus this stage's). Each checkpoint holds three items:
  state  the TrainState (params, BN statistics, optimizer state, micro-step)
  data   the grain iterator state (exactly the next batch after a restore)
  meta   JSON: {"stage_index", "stage", "stage_step", "done", "method"}
A checkpoint with done=True closes its stage; the next stage starts from it (head reinit and a
fresh optimizer are deterministic, so resuming at the boundary equals running through it).
Orbax writes into a temporary directory and renames it when complete, so a SIGKILL mid-save
leaves the previous checkpoint as the latest.
"""
from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int | None = 2, asynchronous: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                         create=True)
  return ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, iterator, meta: dict) -> bool:
  """Saves (async when enabled); False when `step` is already saved (nothing new since)."""
  if step in mngr.all_steps():
    return False
  items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(iterator)
  return mngr.save(step, args=ocp.args.Composite(**items), force=True)


def latest(mngr: ocp.CheckpointManager) -> tuple[int | None, dict | None]:
  """(step, meta) of the newest complete checkpoint, or (None, None)."""
  step = mngr.latest_step()
  if step is None:
    return None, None
  meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  return step, dict(meta)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, iterator=None):
  """The TrainState (placed by `abstract_state`'s shardings); restores `iterator` in place."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(iterator)
  return mngr.restore(step, args=ocp.args.Composite(**items))["state"]


def abstract_with_shardings(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def load_final_params(workdir: str):
  """(params, batch_stats) of the newest checkpoint, on the host (for tests, export, the demo)."""
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
    step = mngr.latest_step()
    if step is None:
      from synth_jax.errors import TrainingError
      raise TrainingError(f"no checkpoint under {workdir}/checkpoints; run synth-jax train first")
    tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return tree["params"], tree["batch_stats"]
