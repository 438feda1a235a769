"""ResNet, down/up-sampling and the down/mid/up blocks of the SD UNet and VAE, NHWC.

Module and parameter names follow diffusers (`down_blocks.0.resnets.1.conv1.weight` is our
`down_blocks_0/resnets_1/conv1/kernel`), so `torch_layout` converts weights by rule. Only the block
types Stable Diffusion 1.x/2.x use are here.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from synth_jax.diffusion import attention


def group_norm(groups: int, eps: float, dtype, name: str) -> nn.GroupNorm:
  # use_fast_variance=False: E[(x-mean)^2] as torch does; the fast form loses digits in fp32.
  return nn.GroupNorm(groups, epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def conv(features: int, dtype, name: str, kernel: int = 3, stride: int = 1, padding=None):
  pad = ((kernel // 2,) * 2,) * 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=pad, dtype=dtype, name=name)


class ResnetBlock2D(nn.Module):
  """norm-act-conv twice, the time embedding added between (if given), 1x1 shortcut if widths differ."""
  out_channels: int
  groups: int = 32
  eps: float = 1e-6
  time_scale_shift: bool = False  # diffusers resnet_time_scale_shift == "scale_shift"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None):
    h = nn.silu(group_norm(self.groups, self.eps, self.dtype, "norm1")(x))
    h = conv(self.out_channels, self.dtype, "conv1")(h)
    scale_shift = None
    if temb is not None:
      width = self.out_channels * (2 if self.time_scale_shift else 1)
      t = nn.Dense(width, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))[:, None, None, :]
      if self.time_scale_shift:
        scale_shift = jnp.split(t, 2, axis=-1)
      else:
        h = h + t
    h = group_norm(self.groups, self.eps, self.dtype, "norm2")(h)
    if scale_shift is not None:
      h = h * (1 + scale_shift[0]) + scale_shift[1]
    h = conv(self.out_channels, self.dtype, "conv2")(nn.silu(h))
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, self.dtype, "conv_shortcut", kernel=1)(x)
    return x + h


class Downsample2D(nn.Module):
  """Stride-2 3x3 conv; padding 0 means diffusers' asymmetric (0, 1) pad (the VAE encoder)."""
  channels: int
  padding: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    pad = ((1, 1), (1, 1)) if self.padding == 1 else ((0, 1), (0, 1))
    return conv(self.channels, self.dtype, "conv", stride=2, padding=pad)(x)


class Upsample2D(nn.Module):
  """Nearest-neighbour x2 then 3x3 conv."""
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(self.channels, self.dtype, "conv")(x)


def _transformer(block, channels: int, heads: int, layers: int, name: str):
  return attention.Transformer2DModel(
      heads=heads, dim_head=channels // heads, num_layers=layers, groups=block.groups,
      use_linear_projection=block.use_linear_projection, upcast=block.upcast_attention,
      attention_impl=block.attention_impl, dtype=block.dtype, name=name)


class DownBlock(nn.Module):
  """DownBlock2D / CrossAttnDownBlock2D / DownEncoderBlock2D; returns (x, skip outputs)."""
  out_channels: int
  num_layers: int
  add_downsample: bool
  cross_attention: bool = False
  heads: int = 8
  transformer_layers: int = 1
  groups: int = 32
  eps: float = 1e-5
  downsample_padding: int = 1
  time_scale_shift: bool = False
  use_linear_projection: bool = False
  upcast_attention: bool = False
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None, context=None):
    skips = []
    for i in range(self.num_layers):
      x = ResnetBlock2D(self.out_channels, self.groups, self.eps, self.time_scale_shift,
                        self.dtype, name=f"resnets_{i}")(x, temb)
      if self.cross_attention:
        x = _transformer(self, self.out_channels, self.heads, self.transformer_layers,
                         f"attentions_{i}")(x, context)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(self.out_channels, self.downsample_padding, self.dtype,
                       name="downsamplers_0")(x)
      skips.append(x)
    return x, skips


class UpBlock(nn.Module):
  """UpBlock2D / CrossAttnUpBlock2D (consume skips) / UpDecoderBlock2D (skips=None)."""
  out_channels: int
  num_layers: int
  add_upsample: bool
  cross_attention: bool = False
  heads: int = 8
  transformer_layers: int = 1
  groups: int = 32
  eps: float = 1e-5
  time_scale_shift: bool = False
  use_linear_projection: bool = False
  upcast_attention: bool = False
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, skips=None, temb=None, context=None):
    skips = list(skips) if skips is not None else None
    for i in range(self.num_layers):
      if skips is not None:  # diffusers concatenates (hidden, skip) on channels
        x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = ResnetBlock2D(self.out_channels, self.groups, self.eps, self.time_scale_shift,
                        self.dtype, name=f"resnets_{i}")(x, temb)
      if self.cross_attention:
        x = _transformer(self, self.out_channels, self.heads, self.transformer_layers,
                         f"attentions_{i}")(x, context)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, self.dtype, name="upsamplers_0")(x)
    return x


class MidBlock(nn.Module):
  """resnet, attention, resnet: cross-attention in the UNet, one-head self-attention in the VAE."""
  channels: int
  cross_attention: bool = True
  add_attention: bool = True
  heads: int = 8
  transformer_layers: int = 1
  groups: int = 32
  eps: float = 1e-5
  time_scale_shift: bool = False
  use_linear_projection: bool = False
  upcast_attention: bool = False
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None, context=None):
    resnet = lambda i: ResnetBlock2D(self.channels, self.groups, self.eps,  # noqa: E731
                                     self.time_scale_shift, self.dtype, name=f"resnets_{i}")
    x = resnet(0)(x, temb)
    if self.cross_attention:
      x = _transformer(self, self.channels, self.heads, self.transformer_layers,
                       "attentions_0")(x, context)
    elif self.add_attention:
      x = attention.SpatialSelfAttention(self.channels, self.groups, self.eps, self.attention_impl,
                                         self.dtype, name="attentions_0")(x)
    return resnet(1)(x, temb)


def timestep_embedding(timesteps, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                       max_period: float = 10000.0):
  """diffusers `get_timestep_embedding`, in fp32 (timesteps reach 999: bf16 would round them)."""
  half = dim // 2
  exponent = -jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb

