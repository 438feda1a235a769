"""Re-estimates BatchNorm running statistics on real training images before evaluation.

  stats = recalibrate(model, params, batch_stats, iterator, mesh, batches=N, dtype=jnp.float32)

Why (issue 17, point 1): after bridged transfer's synthetic phase, a short real phase leaves the
running statistics partly synthetic (28-66% after a few-shot phase 2 at momentum 0.9), and
evaluation normalises real test images with them. This is torch.optim.swa_utils.update_bn's
rule: the running mean and (unbiased) variance become the plain average, over N batches of the
real training stream, of each batch's statistics (torch's `momentum=None`, cumulative average).

Each batch is run twice in train mode, from all-zero and all-one running statistics; the two
updated tables give the momentum m (ones: m + (1-m)b, zeros: (1-m)b) and the batch statistic b
without knowing how the model sets its momentum. Only the "real" domain (0) is re-estimated;
rows a batch does not touch keep their values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from synth_jax import sharding


def make_batch_stats_fn(model, dtype=jnp.float32, norm=None):
  """A jitted (params, batch_stats, batch) -> (per-batch statistics table, touched mask)."""
  from synth_jax.train import steps as steps_lib

  def fn(params, batch_stats, batch):
    images = steps_lib.batch_images(batch, dtype, norm)

    def run(fill):
      start = jax.tree.map(lambda v: jnp.full_like(v, fill), batch_stats)
      _, upd = model.apply({"params": params, "batch_stats": start}, images, train=True, domain=0,
                           mutable=["batch_stats"])
      return upd["batch_stats"]
    z, o = run(0.0), run(1.0)
    one_minus_m = jax.tree.map(lambda zz, oo: 1.0 - (oo - zz), z, o)
    touched = jax.tree.map(lambda d: d > 1e-6, one_minus_m)
    b = jax.tree.map(lambda zz, d, t: jnp.where(t, zz / jnp.where(t, d, 1.0), 0.0), z,
                     one_minus_m, touched)
    return b, touched

  return jax.jit(fn)


def recalibrate(model, params, batch_stats, iterator, mesh, batches: int, dtype=jnp.float32,
                norm=None):
  """The re-estimated batch_stats (same tree, replicated); unchanged when the model has none."""
  if not jax.tree.leaves(batch_stats) or batches <= 0:
    return batch_stats
  fn = make_batch_stats_fn(model, dtype, norm)
  total, touched = None, None
  for _ in range(batches):
    b, t = fn(params, batch_stats, sharding.shard_batch(next(iterator), mesh))
    total = b if total is None else jax.tree.map(jnp.add, total, b)
    touched = t
  new = jax.tree.map(lambda s, t, old: jnp.where(t, s / batches, old), total, touched, batch_stats)
  return jax.device_put(new, sharding.replicated(mesh))
