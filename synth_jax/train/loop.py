"""One training phase: the step loop, checkpoints, preemption, non-finite checks, evaluation.

Checkpoints (orbax CheckpointManager under `<workdir>/checkpoints`) are numbered by the global
step (the sum over phases) and hold three items: `state` (step, params, batch_stats, opt_state),
`meta` (phase index, steps done in it, whether the phase finished, the earlier phases' records
for results.json) and `data` (the grain iterator's state). A phase saves every `checkpoint_every`
steps, at its end, and when SIGTERM arrives (`runs.should_stop()` -> save -> `runs.Preempted`).
A checkpoint is never written from non-finite parameters, so after a TrainingError the latest
checkpoint is the last good one.
Every saved file's size and sha256 are recorded and checked before a restore (`integrity`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import faults, hosts, runs, sharding
from synth_jax.errors import TrainingError
from synth_jax.train import integrity
from synth_jax.train.integrity import checkpoint_manager  # noqa: F401  (the one constructor)

log = logging.getLogger(__name__)


def read_meta(mngr, step: int) -> dict:
  import orbax.checkpoint as ocp
  integrity.verify(mngr, step)  # a truncated/altered file is named here, not deep in orbax
  return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def restore(mngr, step: int, template, iterator=None):
  """Restores `state` (shaped/sharded like `template`) and, if given, the data iterator."""
  import grain
  import orbax.checkpoint as ocp
  integrity.check_compatible(mngr, step, template)
  items = {"state": ocp.args.StandardRestore(template)}
  if iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(iterator)
  return mngr.restore(step, args=ocp.args.Composite(**items))["state"]


def all_finite(tree) -> bool:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return bool(jnp.all(jnp.stack(leaves))) if leaves else True


def save(mngr, step: int, state, meta: dict, iterator) -> None:
  """Saves unless that step exists already; refuses non-finite parameters."""
  import grain
  import orbax.checkpoint as ocp
  if step in mngr.all_steps():
    return
  if not all_finite((state.params, state.batch_stats)):
    raise TrainingError(f"parameters are non-finite at global step {step}; not checkpointed "
                        f"(latest good checkpoint: {mngr.latest_step()}); lower the lr")
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta),
                                          data=grain.checkpoint.CheckpointSave(iterator)))
  mngr.wait_until_finished()
  integrity.record(mngr, step)


class Recorder:
  """metrics.jsonl (always) + clu TensorBoard writer (when tensorflow imports); process 0 only."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.main = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.writer = None
    if self.main and tensorboard:
      try:
        from clu import metric_writers
        self.writer = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))
      except Exception as e:  # no tensorflow: jsonl only
        log.warning("TensorBoard writer unavailable (%s); writing metrics.jsonl only", e)

  def write(self, step: int, scalars: dict) -> None:
    if not self.main:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    # Appended lines, not an atomic rewrite: a log; a resumed run may repeat a few steps.
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **scalars}) + "\n")
    if self.writer is not None:
      self.writer.write_scalars(int(step), scalars)
      self.writer.flush()


@dataclasses.dataclass
class PhaseRun:
  """What `run_phase` needs for one training phase."""
  index: int
  name: str
  steps: int
  offset: int                 # global step of this phase's step 0
  batch_size: int
  train_step: Callable
  rng: Any
  log_every: int
  checkpoint_every: int
  eval_every: int = 0
  evaluate: Callable | None = None   # state -> metrics dict
  history: list = dataclasses.field(default_factory=list)  # earlier phases' results.json records


def put_train_batch(batch, mesh, step: int):
  """Host batch -> global arrays on the batch axes (a module function so tests can inject faults)."""
  del step
  return sharding.shard_batch(batch, mesh)


def run_phase(run: PhaseRun, state, iterator, mesh, mngr, recorder: Recorder):
  """Trains `state` from its step to `run.steps`; returns the final state (checkpointed)."""
  start = int(state.step)
  meta = lambda s, done: {"phase": run.index, "phase_data": run.name, "phase_step": s,  # noqa: E731
                          "phase_done": done, "phases": run.history}
  bar = runs.progress(total=run.steps * run.batch_size, initial=start * run.batch_size,
                      desc=f"phase {run.index} {run.name}", unit="img", unit_scale=True)
  pending, t0, last_logged = None, time.perf_counter(), start
  try:
    for step in range(start + 1, run.steps + 1):
      faults.point("train_step")
      batch = put_train_batch(next(iterator), mesh, step)
      state, metrics = run.train_step(state, batch, run.rng)
      if pending is not None:  # check the previous step's loss: keeps one step in flight
        _check(pending, step - 1, run, mngr)
      pending = metrics
      bar.update(run.batch_size)
      if step % run.log_every == 0 or step == run.steps:
        _check(metrics, step, run, mngr)
        dt = time.perf_counter() - t0
        scalars = {f"train/{k}": v for k, v in jax.device_get(metrics).items()}
        scalars["train/img_per_s"] = (step - last_logged) * run.batch_size / max(dt, 1e-9)
        recorder.write(run.offset + step, scalars)
        t0, last_logged = time.perf_counter(), step
      if run.eval_every and step % run.eval_every == 0 and step < run.steps and run.evaluate:
        recorder.write(run.offset + step, run.evaluate(state))
      if step < run.steps and step % run.checkpoint_every == 0:
        _check(metrics, step, run, mngr)
        save(mngr, run.offset + step, state, meta(step, False), iterator)
      if hosts.any_host(runs.should_stop()):  # every host stops at the same step
        _check(metrics, step, run, mngr)
        save(mngr, run.offset + step, state, meta(step, step == run.steps), iterator)
        raise runs.Preempted(f"phase {run.index} ({run.name}) saved at step {step}; rerun the "
                             "same command to resume")
    if pending is not None:
      _check(pending, run.steps, run, mngr)
  finally:
    bar.close()
  save(mngr, run.offset + run.steps, state, meta(run.steps, True), iterator)
  return state


def _check(metrics, step: int, run: PhaseRun, mngr) -> None:
  loss = float(metrics["loss"])
  if not math.isfinite(loss):
    raise TrainingError(f"loss is {loss} at phase {run.index} ({run.name}) step {step} (global "
                        f"{run.offset + step}); last good checkpoint: step {mngr.latest_step()}; "
                        "lower the learning rate or check the data")


def host_values(tree):
  """Global arrays -> numpy with every row on every process. On several hosts the per-example
  outputs are sharded across processes (each holds its own rows): `device_get` refuses those, so
  they are all-gathered and every process computes the same metrics over the whole split."""
  if all(x.is_fully_addressable for x in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def evaluate(eval_step, params, batch_stats, dataset, mesh, num_classes: int) -> dict:
  """Top-1, top-5, mean loss and per-class accuracy over every (masked-in) example, on every
  process (the dataset yields this process's part of each global batch)."""
  hits1 = np.zeros(num_classes)
  hits5 = np.zeros(num_classes)
  count = np.zeros(num_classes)
  loss_sum = 0.0
  for batch in dataset:
    out = host_values(eval_step(params, batch_stats, sharding.shard_batch(batch, mesh)))
    m = out["mask"].astype(bool)
    labels = out["label"][m]
    np.add.at(count, labels, 1)
    np.add.at(hits1, labels, out["top1"][m])
    np.add.at(hits5, labels, out["top5"][m])
    loss_sum += float(out["loss"][m].sum())
  n = max(count.sum(), 1)
  per_class = np.where(count > 0, hits1 / np.maximum(count, 1), np.nan)
  return {"top1": float(hits1.sum() / n), "top5": float(hits5.sum() / n),
          "loss": loss_sum / n, "num_examples": int(count.sum()),
          "mean_per_class": float(np.nanmean(per_class)),
          "per_class": [None if np.isnan(x) else float(x) for x in per_class]}
