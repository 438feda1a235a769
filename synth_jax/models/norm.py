"""Per-domain normalization: BatchNorm with running statistics per domain, LayerNorm affine per domain.

The auxiliary BN of "Diversify, Don't Fine-Tune" (AdvProp's MixBatchNorm convention, facts.md 2.4):
every BN keeps one set of running statistics per domain ("real" first, then e.g. "synthetic"), and
optionally one affine pair per domain. A batch is routed by `domain`, which may be

  * None:            every example is domain 0 ("real"); evaluation default.
  * an int:          the whole batch is that domain (static).
  * a tuple of ints: static split sizes, one per domain, in domain order (the paired batches of the
                     data pipeline are the real part first, then the synthetic part).
  * an int array:    one domain id per example (shape (batch,)).

With one domain the variables are exactly those of a plain BatchNorm/LayerNorm (`scale`, `bias`,
`mean`, `var` of shape (C,)), so plain checkpoints load unchanged. With D > 1 the statistics are
stacked to (D, C) (and the affine too when `separate_affine`).

Momentum follows Flax (`running = momentum * running + (1 - momentum) * batch`); torch's
`momentum=0.1` is `momentum=0.9` here. The running variance is updated with the unbiased batch
variance (n / (n - 1)), as torch does, so statistics trained here and in torch agree exactly; the
normalization itself uses the biased variance, like both libraries.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synth_jax.errors import ConfigError


def resolve_domain(domain: Any, batch: int, num_domains: int):
  """Normalizes a domain spec to ("whole", d) | ("split", sizes) | ("ids", int array)."""
  if domain is None:
    return ("whole", 0)
  if isinstance(domain, (int, np.integer)):
    if not 0 <= int(domain) < num_domains:
      raise ConfigError(f"domain {domain} is out of range for {num_domains} domain(s); use 0..{num_domains - 1}")
    return ("whole", int(domain))
  if isinstance(domain, (tuple, list)):
    sizes = tuple(int(s) for s in domain)
    if len(sizes) != num_domains or sum(sizes) != batch or min(sizes) < 0:
      raise ConfigError(f"domain split sizes {sizes} must be {num_domains} non-negative sizes summing to "
                        f"the batch size {batch}")
    return ("split", sizes)
  ids = jnp.asarray(domain)
  if ids.shape != (batch,) or not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ConfigError(f"per-example domain ids must be an int array of shape ({batch},), got "
                      f"{ids.dtype}{tuple(ids.shape)}")
  return ("ids", ids)


def _per_channel(v, x):
  """(C,) -> broadcast over x; (B, C) -> (B, 1, ..., 1, C)."""
  if v.ndim == 1:
    return v
  return v.reshape((v.shape[0],) + (1,) * (x.ndim - 2) + (v.shape[-1],))


class DomainBatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with running statistics per domain.

  Attributes:
    num_domains: number of domains D (1 = plain BatchNorm).
    separate_affine: per-domain scale/bias as well (only with D > 1).
    momentum: Flax convention (torch momentum 0.1 == 0.9 here).
    epsilon: added to the variance (torch default 1e-5).
    dtype: output dtype (None: the input's). Statistics are always computed in float32.
    param_dtype: dtype of scale/bias.
    scale_init: initializer of the scale (zeros for zero-init residual blocks).
  """
  num_domains: int = 1
  separate_affine: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x, *, train: bool = False, domain: Any = None):
    c, d = x.shape[-1], self.num_domains
    per_dom_affine = d > 1 and self.separate_affine
    aff_shape = (d, c) if per_dom_affine else (c,)
    scale = self.param("scale", lambda k, s: self.scale_init(k, s, self.param_dtype), aff_shape)
    bias = self.param("bias", nn.initializers.zeros, aff_shape, self.param_dtype)
    st_shape = (d, c) if d > 1 else (c,)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(st_shape, jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(st_shape, jnp.float32))
    out_dtype = self.dtype or x.dtype
    kind, arg = resolve_domain(domain, x.shape[0], d)
    row = lambda v, i: v[i] if v.ndim == 2 else v  # noqa: E731  (row i of a per-domain table)

    def apply(x, mean, var, scale, bias):
      mul = _per_channel(scale.astype(jnp.float32) * jax.lax.rsqrt(var + self.epsilon), x)
      add = _per_channel(bias.astype(jnp.float32), x) - _per_channel(mean, x) * mul
      return (x.astype(jnp.float32) * mul + add).astype(out_dtype)

    if not train:  # running statistics; domain 0 unless told otherwise
      if kind == "ids":
        oh = jax.nn.one_hot(arg, d, dtype=jnp.float32)
        tab = lambda v: oh @ v if v.ndim == 2 else v  # noqa: E731
        return apply(x, tab(ra_mean.value), tab(ra_var.value), tab(scale), tab(bias))
      if kind == "split":
        return self._split(x, arg, lambda xs, i: apply(xs, row(ra_mean.value, i), row(ra_var.value, i),
                                                        row(scale, i), row(bias, i)))
      return apply(x, row(ra_mean.value, arg), row(ra_var.value, arg), row(scale, arg), row(bias, arg))

    axes = tuple(range(x.ndim - 1))
    if kind == "ids":
      return self._train_ids(x, arg, scale, bias, ra_mean, ra_var, apply)
    if kind == "whole":
      pieces = [(arg, x)]
    else:
      pieces, start = [], 0
      for i, n in enumerate(arg):
        if n:
          pieces.append((i, x[start:start + n]))
        start += n
    outs = []
    for i, xs in pieces:
      x32 = xs.astype(jnp.float32)
      mean = jnp.mean(x32, axes)
      var = jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.0)
      n = xs.size // c
      self._update(ra_mean, ra_var, mean, var * (n / max(n - 1, 1)), i)
      outs.append(apply(xs, mean, var, row(scale, i), row(bias, i)))
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)

  def _split(self, x, sizes, fn):
    outs, start = [], 0
    for i, n in enumerate(sizes):
      if n:
        outs.append(fn(x[start:start + n], i))
      start += n
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)

  def _update(self, ra_mean, ra_var, mean, unbiased_var, i):
    if self.is_initializing():
      return
    m = self.momentum
    if ra_mean.value.ndim == 2:
      ra_mean.value = ra_mean.value.at[i].set(m * ra_mean.value[i] + (1 - m) * mean)
      ra_var.value = ra_var.value.at[i].set(m * ra_var.value[i] + (1 - m) * unbiased_var)
    else:
      ra_mean.value = m * ra_mean.value + (1 - m) * mean
      ra_var.value = m * ra_var.value + (1 - m) * unbiased_var

  def _train_ids(self, x, ids, scale, bias, ra_mean, ra_var, apply):
    """Per-example domains: masked per-domain sums, so any mix of domains works in one batch."""
    d, c = self.num_domains, x.shape[-1]
    oh = jax.nn.one_hot(ids, d, dtype=jnp.float32)  # (B, D)
    x32 = x.astype(jnp.float32)
    spatial = tuple(range(1, x.ndim - 1))
    per_ex = x.size // (x.shape[0] * c)  # elements per example and channel
    s1 = oh.T @ jnp.sum(x32, spatial)  # (D, C)
    s2 = oh.T @ jnp.sum(jnp.square(x32), spatial)
    cnt = (jnp.sum(oh, 0) * per_ex)[:, None]  # (D, 1)
    mean = s1 / jnp.maximum(cnt, 1.0)
    var = jnp.maximum(s2 / jnp.maximum(cnt, 1.0) - jnp.square(mean), 0.0)
    if not self.is_initializing():
      m, present = self.momentum, cnt > 0
      unbiased = var * cnt / jnp.maximum(cnt - 1.0, 1.0)
      old_m = ra_mean.value if d > 1 else ra_mean.value[None]
      old_v = ra_var.value if d > 1 else ra_var.value[None]
      # A domain absent from this batch keeps its statistics bit for bit.
      new_m = jnp.where(present, m * old_m + (1 - m) * mean, old_m)
      new_v = jnp.where(present, m * old_v + (1 - m) * unbiased, old_v)
      ra_mean.value, ra_var.value = (new_m, new_v) if d > 1 else (new_m[0], new_v[0])
    tab = lambda v: oh @ v if v.ndim == 2 else v  # noqa: E731
    return apply(x, oh @ mean, oh @ var, tab(scale), tab(bias))


class DomainLayerNorm(nn.Module):
  """LayerNorm over the last axis with, optionally, one affine pair per domain (ViT's AuxBN analogue).

  With `num_domains == 1` or `separate_affine=False` it is a plain LayerNorm (params scale, bias (C,)).
  """
  num_domains: int = 1
  separate_affine: bool = False
  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, domain: Any = None):
    c, d = x.shape[-1], self.num_domains
    shape = (d, c) if d > 1 and self.separate_affine else (c,)
    scale = self.param("scale", nn.initializers.ones, shape, self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, shape, self.param_dtype)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, -1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    if len(shape) == 2:
      ids = domain_ids(domain, x.shape[0], d)
      scale, bias = _per_channel(scale[ids], x), _per_channel(bias[ids], x)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype or x.dtype)


def domain_ids(domain: Any, batch: int, num_domains: int) -> jnp.ndarray:
  """Any domain spec -> an int array of shape (batch,)."""
  kind, arg = resolve_domain(domain, batch, num_domains)
  if kind == "whole":
    return jnp.full((batch,), arg, jnp.int32)
  if kind == "split":
    return jnp.asarray(np.repeat(np.arange(num_domains), arg), jnp.int32)
  return arg


def expand_to_domains(loaded: dict, target_flat: dict) -> dict:
  """Broadcasts plain (C,) tensors to (D, C) where the target is per-domain: every domain starts
  from the checkpoint's statistics/affine."""
  out = dict(loaded)
  for k, v in loaded.items():
    t = target_flat.get(k)
    if t is not None and len(t.shape) == v.ndim + 1 and tuple(t.shape[1:]) == tuple(v.shape):
      out[k] = np.broadcast_to(v, t.shape).copy()
  return out


def check_domains(domains: Sequence[str]) -> tuple[str, ...]:
  domains = tuple(domains)
  if not domains or len(set(domains)) != len(domains):
    raise ConfigError(f"domains {domains} must be a non-empty tuple of distinct names, e.g. ('real', 'synthetic')")
  return domains
