"""Flax AutoencoderKL (encoder and decoder) for Stable Diffusion, loading diffusers weights.

`encode(images in [-1, 1], NHWC) -> (mean, logvar)` of the latent Gaussian (unscaled: multiply by
`scaling_factor` for the UNet); `decode(latents) -> images in about [-1, 1]`. Inversion needs the
encoder, generation the decoder; `__call__` runs both (used only to create parameters).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synth_jax.diffusion import torch_layout
from synth_jax.diffusion import unet_blocks as blocks
from synth_jax.errors import WeightsError

_EPS = 1e-6  # diffusers' Encoder/Decoder hard-code resnet_eps=1e-6


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  sample_size: int = 512

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> "VAEConfig":
    for key, allowed in (("down_block_types", "DownEncoderBlock2D"),
                         ("up_block_types", "UpDecoderBlock2D")):
      for t in config.get(key, ()):
        if t != allowed:
          raise WeightsError(f"vae {key} entry {t!r} is not supported (AutoencoderKL uses {allowed!r})")
    if config.get("act_fn", "silu") != "silu":
      raise WeightsError(f"vae config act_fn={config['act_fn']!r} is not supported (use 'silu')")
    size = config.get("sample_size", 512)
    return cls(
        in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=int(config.get("layers_per_block", 2)),
        latent_channels=int(config.get("latent_channels", 4)),
        norm_num_groups=int(config.get("norm_num_groups", 32)),
        scaling_factor=float(config.get("scaling_factor", 0.18215)),
        use_quant_conv=bool(config.get("use_quant_conv", True)),
        use_post_quant_conv=bool(config.get("use_post_quant_conv", True)),
        mid_block_add_attention=bool(config.get("mid_block_add_attention", True)),
        sample_size=int(size[0] if isinstance(size, (list, tuple)) else size))


class Encoder(nn.Module):
  config: VAEConfig
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, dt = self.config, self.dtype
    ch = c.block_out_channels
    x = blocks.conv(ch[0], dt, "conv_in")(x.astype(dt))
    for i, width in enumerate(ch):
      x, _ = blocks.DownBlock(width, c.layers_per_block, add_downsample=i < len(ch) - 1,
                              groups=c.norm_num_groups, eps=_EPS, downsample_padding=0, dtype=dt,
                              name=f"down_blocks_{i}")(x)
    x = blocks.MidBlock(ch[-1], cross_attention=False, add_attention=c.mid_block_add_attention,
                        groups=c.norm_num_groups, eps=_EPS, attention_impl=self.attention_impl,
                        dtype=dt, name="mid_block")(x)
    x = nn.silu(blocks.group_norm(c.norm_num_groups, _EPS, dt, "conv_norm_out")(x))
    return blocks.conv(2 * c.latent_channels, dt, "conv_out")(x)  # mean and logvar


class Decoder(nn.Module):
  config: VAEConfig
  attention_impl: str | None = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    c, dt = self.config, self.dtype
    ch = c.block_out_channels[::-1]
    x = blocks.conv(ch[0], dt, "conv_in")(z.astype(dt))
    x = blocks.MidBlock(ch[0], cross_attention=False, add_attention=c.mid_block_add_attention,
                        groups=c.norm_num_groups, eps=_EPS, attention_impl=self.attention_impl,
                        dtype=dt, name="mid_block")(x)
    for i, width in enumerate(ch):
      x = blocks.UpBlock(width, c.layers_per_block + 1, add_upsample=i < len(ch) - 1,
                         groups=c.norm_num_groups, eps=_EPS, dtype=dt, name=f"up_blocks_{i}")(x)
    x = nn.silu(blocks.group_norm(c.norm_num_groups, _EPS, dt, "conv_norm_out")(x))
    return blocks.conv(c.out_channels, dt, "conv_out")(x)


class AutoencoderKL(nn.Module):
  config: VAEConfig
  dtype: Any = jnp.float32
  attention_impl: str | None = "xla"

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | VAEConfig, dtype=jnp.float32,
                  attention_impl: str | None = "xla") -> "AutoencoderKL":
    if not isinstance(config, VAEConfig):
      config = VAEConfig.from_diffusers(config)
    return cls(config, dtype, attention_impl)

  def setup(self):
    c = self.config
    self.encoder = Encoder(c, self.attention_impl, self.dtype)
    self.decoder = Decoder(c, self.attention_impl, self.dtype)
    if c.use_quant_conv:
      self.quant_conv = blocks.conv(2 * c.latent_channels, self.dtype, None, kernel=1)
    if c.use_post_quant_conv:
      self.post_quant_conv = blocks.conv(c.latent_channels, self.dtype, None, kernel=1)

  def encode(self, images):
    """images (B,H,W,3) in [-1, 1] -> (mean, logvar), each (B,H/f,W/f,latent_channels)."""
    moments = self.encoder(images)
    if self.config.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, latents):
    """latents (unscaled) -> images (B,H,W,out_channels), about [-1, 1]."""
    if self.config.use_post_quant_conv:
      latents = self.post_quant_conv(latents.astype(self.dtype))
    return self.decoder(latents)

  def __call__(self, images):
    mean, _ = self.encode(images)
    return self.decode(mean)

  def dummy_inputs(self, batch: int = 1):
    s = self.config.sample_size
    return (jnp.zeros((batch, s, s, self.config.in_channels), self.dtype),)

  def init_params(self, seed: int = 0) -> dict:
    params = jax.jit(self.init)(jax.random.PRNGKey(seed), *self.dummy_inputs())["params"]
    return jax.tree_util.tree_map(np.asarray, params)

  def abstract_params(self) -> dict:
    return torch_layout.abstract_params(self, *self.dummy_inputs())


_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _rename_legacy(state: dict) -> dict:
  """Old VAE checkpoints name the mid attention query/key/value/proj_attn, some as 1x1 convs."""
  out = {}
  for k, v in state.items():
    parts = k.split(".")
    if "attentions" in parts and len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION:
      k = ".".join(parts[:-2] + [_LEGACY_ATTENTION[parts[-2]], parts[-1]])
      if v.ndim == 4:
        v = v[:, :, 0, 0]
    out[k] = v
  return out


def params_from_diffusers(state: Mapping[str, np.ndarray], config, source: str = "vae") -> dict:
  """diffusers AutoencoderKL state_dict -> our param tree (float32 numpy); strict."""
  module = AutoencoderKL.from_config(config)
  target = module.abstract_params()
  # 1x1 attention projections: from_torch treats 4-d weights as convs, so flatten legacy ones first.
  return torch_layout.from_torch(state, target, source, rename=_rename_legacy)


def params_to_diffusers(params: Mapping[str, Any], config=None) -> dict[str, np.ndarray]:
  return torch_layout.to_torch(params)
