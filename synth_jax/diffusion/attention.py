"""Attention blocks of the SD UNet and VAE, in diffusers' structure and names.

Attention goes through `jax.nn.dot_product_attention`: `implementation='cudnn'` gives cuDNN
flash attention on GPUs (bf16/fp16 only), 'xla' the portable path (TPU, CPU, fp32), None lets JAX
choose; 'splash' is the Pallas TPU splash kernel (`splash.py`; interpret mode off a TPU). Module
attribute `attention_impl` carries the choice down from the UNet/VAE.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "splash", None)


def attend(q, k, v, heads: int, implementation: str | None = "xla", upcast: bool = False):
  """Multi-head scaled dot-product attention on (B, T, heads*D) projections -> (B, T, heads*D)."""
  b, t, inner = q.shape
  dtype = q.dtype
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, inner // heads)  # noqa: E731
  q, k, v = split(q), split(k), split(v)
  if upcast and dtype != jnp.float32 and implementation != "cudnn":
    # diffusers' `upcast_attention` (SD 2.x) computes scores in fp32 to avoid fp16 overflow; cuDNN
    # accumulates scores in fp32 anyway and takes no fp32 inputs, so it keeps the low dtype.
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  if implementation == "splash":
    from synth_jax.diffusion import splash
    out = splash.splash_attention(q, k, v)
  else:
    out = jax.nn.dot_product_attention(q, k, v, implementation=implementation)
  return out.reshape(b, t, inner).astype(dtype)


class Attention(nn.Module):
  """diffusers `Attention`: to_q/to_k/to_v (no bias in the UNet) and to_out.0 (with bias)."""
  query_dim: int
  heads: int
  dim_head: int
  bias: bool = False
  upcast: bool = False
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context=None):
    return _attention(x, x if context is None else context, self.query_dim, self.heads,
                      self.dim_head, self.bias, self.upcast, self.attention_impl, self.dtype)


def _attention(x, context, query_dim, heads, dim_head, bias, upcast, impl, dtype):
  """to_q/to_k/to_v/to_out.0 created in the calling module (its params sit directly under it)."""
  inner = heads * dim_head
  dense = lambda n, name, b: nn.Dense(n, use_bias=b, dtype=dtype, name=name)  # noqa: E731
  q = dense(inner, "to_q", bias)(x)
  k = dense(inner, "to_k", bias)(context)
  v = dense(inner, "to_v", bias)(context)
  return dense(query_dim, "to_out_0", True)(attend(q, k, v, heads, impl, upcast))


class GEGLU(nn.Module):
  """Linear to 2x width, split, value * gelu(gate) (exact erf gelu, as torch's F.gelu)."""
  dim_out: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h, gate = jnp.split(nn.Dense(self.dim_out * 2, dtype=self.dtype, name="proj")(x), 2, axis=-1)
    return h * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  """diffusers `FeedForward` with GEGLU: net.0 (GEGLU), net.1 dropout (no params), net.2 linear."""
  dim: int
  mult: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = GEGLU(self.dim * self.mult, self.dtype, name="net_0")(x)
    return nn.Dense(self.dim, dtype=self.dtype, name="net_2")(h)


def _layer_norm(name, dtype):
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, use_fast_variance=False, name=name)


class BasicTransformerBlock(nn.Module):
  """Self-attention, cross-attention, GEGLU feed-forward; pre-LayerNorm, residual each."""
  dim: int
  heads: int
  dim_head: int
  upcast: bool = False
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    attn = lambda name: Attention(self.dim, self.heads, self.dim_head, upcast=self.upcast,  # noqa
                                  attention_impl=self.attention_impl, dtype=self.dtype, name=name)
    x = attn("attn1")(_layer_norm("norm1", self.dtype)(x)) + x
    x = attn("attn2")(_layer_norm("norm2", self.dtype)(x), context) + x
    return FeedForward(self.dim, dtype=self.dtype, name="ff")(_layer_norm("norm3", self.dtype)(x)) + x


class Transformer2DModel(nn.Module):
  """GroupNorm, proj_in (1x1 conv or linear), transformer blocks, proj_out, residual; NHWC."""
  heads: int
  dim_head: int
  num_layers: int = 1
  groups: int = 32
  use_linear_projection: bool = False
  upcast: bool = False
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    b, h, w, c = x.shape
    inner = self.heads * self.dim_head
    residual = x
    x = nn.GroupNorm(self.groups, epsilon=1e-6, dtype=self.dtype, use_fast_variance=False,
                     name="norm")(x)
    if self.use_linear_projection:
      x = nn.Dense(inner, dtype=self.dtype, name="proj_in")(x.reshape(b, h * w, c))
    else:
      x = nn.Conv(inner, (1, 1), dtype=self.dtype, name="proj_in")(x).reshape(b, h * w, inner)
    context = context.astype(self.dtype)
    for i in range(self.num_layers):
      x = BasicTransformerBlock(inner, self.heads, self.dim_head, self.upcast, self.attention_impl,
                                self.dtype, name=f"transformer_blocks_{i}")(x, context)
    if self.use_linear_projection:
      x = nn.Dense(c, dtype=self.dtype, name="proj_out")(x).reshape(b, h, w, c)
    else:
      x = nn.Conv(c, (1, 1), dtype=self.dtype, name="proj_out")(x.reshape(b, h, w, inner))
    return x + residual


class SpatialSelfAttention(nn.Module):
  """The VAE mid-block attention (diffusers `Attention` with group_norm, biases, one head)."""
  channels: int
  groups: int = 32
  eps: float = 1e-6
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = nn.GroupNorm(self.groups, epsilon=self.eps, dtype=self.dtype, use_fast_variance=False,
                     name="group_norm")(x).reshape(b, h * w, c)
    # diffusers upcasts the VAE's softmax; with one head of width C, fp32 scores are cheap.
    y = _attention(y, y, c, 1, c, True, True, self.attention_impl, self.dtype)
    return y.reshape(b, h, w, c) + x
