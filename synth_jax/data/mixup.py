"""Mixup and CutMix as jit-able jnp functions over a batch (run on device, any stream).

  images, targets = mix_batch(rng, batch["image"], batch["label"], num_classes,
                              mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=0.5)

`normalize_images(uint8 batch)` is the on-device normalization for pipelines run with
`augment={"uint8": True}`. `targets` are soft labels f32[B, num_classes] (one-hot labels, or already-soft ones, mixed with
the same weight as the pixels). Each example is mixed with its partner in a random permutation
of the batch; one lambda ~ Beta(alpha, alpha) per batch (as timm's default "batch" mode). With
alpha <= 0 the function is the identity (plus one-hot). CutMix's lambda is corrected to the box
area actually pasted after clipping, so targets match pixels exactly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images, dtype=jnp.float32, mean=None, std=None):
  """uint8 NHWC (pipeline with augment uint8=True) -> normalized `dtype`, on device.

  `mean`/`std` in [0, 1] units are the statistics the weights were trained with (the trainer
  passes the checkpoint's, synth_jax.models.input_norm); None means ImageNet's."""
  mean = jnp.array(IMAGENET_MEAN if mean is None else mean, jnp.float32) * 255
  std = jnp.array(IMAGENET_STD if std is None else std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def _targets(labels, num_classes):
  if labels.ndim == 1:
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return labels.astype(jnp.float32)


def host_order(segments: tuple[int, ...], hosts: int):
  """Where each row of a global batch sits in the one-process order, for `hosts` processes that
  each feed `segments` rows per stream (the pipeline's host p takes rows p::hosts of every
  stream; the hosts' batches are stacked host after host, each [stream 0 rows, stream 1 rows]).
  Returns (canon, rows): canon[g] = the one-process position of global row g, rows = its inverse;
  None for one process (the orders agree)."""
  if hosts <= 1:
    return None
  per_host = sum(segments)
  canon = np.empty(per_host * hosts, np.int32)
  for g in range(len(canon)):
    p, r = divmod(g, per_host)
    base = 0
    for seg in segments:
      if r < seg:
        canon[g] = base + r * hosts + p
        break
      r -= seg
      base += seg * hosts
  rows = np.empty_like(canon)
  rows[canon] = np.arange(len(canon), dtype=np.int32)
  return canon, rows


def _partner(key, n: int, order):
  """Row g's mixing partner: a permutation drawn over the one-process order (`host_order`), so
  N processes mix the same pairs as one process does; plain `permutation(key, n)` for one."""
  perm = jax.random.permutation(key, n)
  if order is None:
    return perm
  canon, rows = order
  if len(canon) != n:
    raise ValueError(f"host_order covers {len(canon)} rows, the batch has {n}")
  return jnp.asarray(rows)[perm[jnp.asarray(canon)]]


def mixup(rng, images, labels, alpha: float, num_classes: int | None = None, order=None):
  """lam * x + (1 - lam) * x[perm], same for targets; returns (images, targets, lam)."""
  targets = _targets(labels, num_classes)
  if alpha <= 0:
    return images, targets, jnp.float32(1.0)
  k_lam, k_perm = jax.random.split(rng)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
  perm = _partner(k_perm, images.shape[0], order)
  mixed = lam * images + (1 - lam) * images[perm]
  return mixed.astype(images.dtype), lam * targets + (1 - lam) * targets[perm], lam


def cutmix(rng, images, labels, alpha: float, num_classes: int | None = None, order=None):
  """Pastes a box of x[perm] into x (NHWC); targets weighted by the pasted area."""
  targets = _targets(labels, num_classes)
  if alpha <= 0:
    return images, targets, jnp.float32(1.0)
  k_lam, k_perm, k_y, k_x = jax.random.split(rng, 4)
  _, h, w, _ = images.shape
  lam = jax.random.beta(k_lam, alpha, alpha)
  cut = jnp.sqrt(1.0 - lam)
  ch, cw = (h * cut).astype(jnp.int32), (w * cut).astype(jnp.int32)
  cy = jax.random.randint(k_y, (), 0, h)
  cx = jax.random.randint(k_x, (), 0, w)
  y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
  x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
  ys = jnp.arange(h)[:, None]
  xs = jnp.arange(w)[None, :]
  box = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)  # [H, W]
  perm = _partner(k_perm, images.shape[0], order)
  mixed = jnp.where(box[None, :, :, None], images[perm], images)
  lam = 1.0 - box.sum().astype(jnp.float32) / (h * w)  # the area really kept
  return mixed, lam * targets + (1 - lam) * targets[perm], lam


def mix_batch(rng, images, labels, num_classes: int, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0, switch_prob: float = 0.5, order=None):
  """Mixup, CutMix, or one of the two per batch (CutMix with probability switch_prob).
  `order`: `host_order(...)` of a multi-process run (pairs as one process would make them)."""
  if mixup_alpha > 0 and cutmix_alpha > 0:
    k_sw, k_mix = jax.random.split(rng)
    use_cutmix = jax.random.uniform(k_sw) < switch_prob
    return jax.lax.cond(use_cutmix,
                        lambda: cutmix(k_mix, images, labels, cutmix_alpha, num_classes, order)[:2],
                        lambda: mixup(k_mix, images, labels, mixup_alpha, num_classes, order)[:2])
  if cutmix_alpha > 0:
    return cutmix(rng, images, labels, cutmix_alpha, num_classes, order)[:2]
  return mixup(rng, images, labels, mixup_alpha, num_classes, order)[:2]
