"""Padded + masked evaluation: top-1, top-5 and per-class accuracy over every test example once."""
from __future__ import annotations

import functools

import jax
import numpy as np

from synth_jax import runs, sharding
from synth_jax.train import steps as steps_lib


def make_eval_fn(model, num_classes: int, compute_dtype):
  return jax.jit(functools.partial(steps_lib.eval_step, model=model, num_classes=num_classes,
                                   compute_dtype=compute_dtype))


def evaluate(eval_fn, state, dataset, mesh, class_names) -> dict:
  """Sums per-class counts on device (one host fetch at the end) and turns them into accuracies."""
  totals = None
  for batch in runs.progress(dataset, desc="eval", unit="batch", leave=False):
    counts = eval_fn(state, sharding.shard_batch(batch, mesh))
    totals = counts if totals is None else jax.tree.map(lambda a, b: a + b, totals, counts)
  totals = jax.tree.map(np.asarray, jax.device_get(totals))
  count = totals["count"]
  n = float(count.sum())
  per_class = np.where(count > 0, totals["correct1"] / np.maximum(count, 1), np.nan)
  return {
      "top1": float(totals["correct1"].sum() / n),
      "top5": float(totals["correct5"].sum() / n),
      "loss": float(totals["loss"] / n),
      "num_examples": int(n),
      "per_class_accuracy": {name: (None if np.isnan(a) else float(a))
                             for name, a in zip(class_names, per_class)},
  }
