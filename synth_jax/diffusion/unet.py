"""Flax UNet2DConditionModel for Stable Diffusion 1.x/2.x and SDXL, loading diffusers weights.

`UNet2DConditionModel.from_config(config_json)` takes the dict of a diffusers `unet/config.json`;
`params_from_diffusers(state_dict, config)` converts its tensors (strict: every missing, extra or
mis-shaped tensor is named). Latents are NHWC. SDXL's `text_time` added conditioning (pooled text
embedding + size/crop ids) is `text_embeds=`, `time_ids=`. Features these models do not use (class
embeddings, other block types) are refused with a one-line error at construction.
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

_DOWN = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UP = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
# config keys whose non-default values change the network in ways we do not implement
_UNSUPPORTED = {"class_embed_type": None, "num_class_embeds": None, "addition_embed_type": None,
                "encoder_hid_dim": None, "timestep_post_act": None,
                "center_input_sample": False, "dual_cross_attention": False,
                "only_cross_attention": False, "time_embedding_type": "positional",
                "conv_in_kernel": 3, "conv_out_kernel": 3, "num_attention_heads": None,
                "mid_block_scale_factor": 1, "reverse_transformer_layers_per_block": None,
                "cross_attention_norm": None, "class_embeddings_concat": False,
                "projection_class_embeddings_input_dim": None, "attention_type": "default"}


def _per_block(value, n: int, key: str) -> tuple:
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise WeightsError(f"unet config {key}={list(value)} needs one entry per block ({n})")
    return tuple(value)
  return (value,) * n


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """The fields of diffusers' UNet2DConditionModel config that SD 1.x/2.x use."""
  in_channels: int = 4
  out_channels: int = 4
  down_block_types: tuple = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
  up_block_types: tuple = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
  block_out_channels: tuple = (320, 640, 1280, 1280)
  layers_per_block: int = 2
  cross_attention_dim: int = 768
  heads: tuple = (8, 8, 8, 8)  # diffusers' `attention_head_dim` is, for SD, the head *count*
  transformer_layers: tuple = (1, 1, 1, 1)
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  downsample_padding: int = 1
  use_linear_projection: bool = False
  upcast_attention: bool = False
  time_scale_shift: bool = False
  sample_size: int = 64
  # SDXL (addition_embed_type 'text_time'): sinusoidal width per time id, and the add MLP's input
  addition_time_embed_dim: int | None = None
  projection_class_embeddings_input_dim: int | None = None
  # LCM-distilled UNets (LCM-Dreamshaper, ...): the guidance scale is an input, embedded with
  # sinusoids of this width and added to the timestep's (diffusers' TimestepEmbedding.cond_proj)
  time_cond_proj_dim: int | None = None

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> "UNetConfig":
    text_time = config.get("addition_embed_type") == "text_time"
    for key, default in _UNSUPPORTED.items():
      if text_time and key in ("addition_embed_type", "projection_class_embeddings_input_dim"):
        continue
      if config.get(key, default) != default:
        raise WeightsError(f"unet config {key}={config[key]!r} is not supported (Stable Diffusion "
                           f"1.x/2.x UNets have {default!r})")
    if config.get("act_fn", "silu") != "silu":
      raise WeightsError(f"unet config act_fn={config['act_fn']!r} is not supported (use 'silu')")
    down, up = tuple(config["down_block_types"]), tuple(config["up_block_types"])
    for t in down + up:
      if t not in _DOWN and t not in _UP:
        raise WeightsError(f"unet block type {t!r} is not supported; SD 1.x/2.x use "
                           f"{sorted(_DOWN) + sorted(_UP)}")
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid != "UNetMidBlock2DCrossAttn":
      raise WeightsError(f"unet mid_block_type={mid!r} is not supported "
                         "(use 'UNetMidBlock2DCrossAttn')")
    n = len(down)
    size = config.get("sample_size", 64)
    return cls(
        in_channels=config.get("in_channels", 4), out_channels=config.get("out_channels", 4),
        down_block_types=down, up_block_types=up,
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=int(config.get("layers_per_block", 2)),
        cross_attention_dim=int(config.get("cross_attention_dim", 768)),
        heads=_per_block(config.get("attention_head_dim", 8), n, "attention_head_dim"),
        transformer_layers=_per_block(config.get("transformer_layers_per_block", 1), n,
                                      "transformer_layers_per_block"),
        norm_num_groups=int(config.get("norm_num_groups", 32)),
        norm_eps=float(config.get("norm_eps", 1e-5)),
        flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
        freq_shift=float(config.get("freq_shift", 0)),
        downsample_padding=int(config.get("downsample_padding", 1)),
        use_linear_projection=bool(config.get("use_linear_projection", False)),
        upcast_attention=bool(config.get("upcast_attention", False)),
        time_scale_shift=config.get("resnet_time_scale_shift", "default") == "scale_shift",
        sample_size=int(size[0] if isinstance(size, (list, tuple)) else size),
        addition_time_embed_dim=int(config["addition_time_embed_dim"]) if text_time else None,
        projection_class_embeddings_input_dim=(
            int(config["projection_class_embeddings_input_dim"]) if text_time else None),
        time_cond_proj_dim=(int(config["time_cond_proj_dim"])
                            if config.get("time_cond_proj_dim") is not None else None))


class UNet2DConditionModel(nn.Module):
  """(latents (B,h,w,C), timesteps (B,) or (), text embeddings (B,T,D)) -> prediction (B,h,w,C)."""
  config: UNetConfig
  dtype: Any = jnp.float32
  attention_impl: str | None = "xla"
  # recompute each down/mid/up block's activations in the backward pass (training memory);
  # parameter names are unchanged
  remat: bool = False

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | UNetConfig, dtype=jnp.float32,
                  attention_impl: str | None = "xla") -> "UNet2DConditionModel":
    if not isinstance(config, UNetConfig):
      config = UNetConfig.from_diffusers(config)
    return cls(config, dtype, attention_impl)

  @nn.compact
  def __call__(self, sample, timesteps, encoder_hidden_states, text_embeds=None, time_ids=None,
               timestep_cond=None):
    """SDXL also takes text_embeds (B, P) (the pooled text embedding) and time_ids (B, 6); an
    LCM-distilled UNet timestep_cond (B, time_cond_proj_dim), `guidance_embedding(w - 1)`."""
    c, dt = self.config, self.dtype
    channels = c.block_out_channels
    common = dict(groups=c.norm_num_groups, eps=c.norm_eps, time_scale_shift=c.time_scale_shift,
                  use_linear_projection=c.use_linear_projection,
                  upcast_attention=c.upcast_attention, attention_impl=self.attention_impl, dtype=dt)
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (sample.shape[0],))
    temb = blocks.timestep_embedding(timesteps, channels[0], c.flip_sin_to_cos, c.freq_shift)
    if c.time_cond_proj_dim:  # no condition = a zero one (diffusers skips the bias-free term)
      cond = (jnp.zeros((sample.shape[0], c.time_cond_proj_dim), dt) if timestep_cond is None
              else timestep_cond.astype(dt))
      temb = temb + nn.Dense(channels[0], use_bias=False, dtype=dt,
                             name="time_embedding_cond_proj")(cond)
    temb = nn.Dense(channels[0] * 4, dtype=dt, name="time_embedding_linear_1")(temb.astype(dt))
    temb = nn.Dense(channels[0] * 4, dtype=dt, name="time_embedding_linear_2")(nn.silu(temb))
    if c.addition_time_embed_dim:  # diffusers' text_time: add an MLP of [pooled, sinusoid(ids)]
      if text_embeds is None or time_ids is None:
        raise ValueError("an SDXL (text_time) UNet needs text_embeds= and time_ids=")
      ids = blocks.timestep_embedding(time_ids.reshape(-1), c.addition_time_embed_dim,
                                      c.flip_sin_to_cos, c.freq_shift)
      add = jnp.concatenate([text_embeds.astype(jnp.float32),
                             ids.reshape(sample.shape[0], -1)], axis=-1).astype(dt)
      add = nn.Dense(channels[0] * 4, dtype=dt, name="add_embedding_linear_1")(add)
      temb = temb + nn.Dense(channels[0] * 4, dtype=dt, name="add_embedding_linear_2")(nn.silu(add))
    context = encoder_hidden_states.astype(dt)
    wrap = nn.remat if self.remat else (lambda m: m)
    down_block, mid_block, up_block = (wrap(b) for b in (blocks.DownBlock, blocks.MidBlock,
                                                         blocks.UpBlock))

    x = blocks.conv(channels[0], dt, "conv_in")(sample.astype(dt))
    skips = [x]
    for i, kind in enumerate(c.down_block_types):
      x, out = down_block(
          channels[i], c.layers_per_block, add_downsample=i < len(channels) - 1,
          cross_attention=_DOWN[kind], heads=c.heads[i], transformer_layers=c.transformer_layers[i],
          downsample_padding=c.downsample_padding, name=f"down_blocks_{i}", **common)(
              x, temb, context)
      skips += out
    x = mid_block(channels[-1], heads=c.heads[-1], transformer_layers=c.transformer_layers[-1],
                        name="mid_block", **common)(x, temb, context)
    heads, layers = c.heads[::-1], c.transformer_layers[::-1]
    for i, kind in enumerate(c.up_block_types):
      n = c.layers_per_block + 1
      x = up_block(
          channels[::-1][i], n, add_upsample=i < len(channels) - 1, cross_attention=_UP[kind],
          heads=heads[i], transformer_layers=layers[i], name=f"up_blocks_{i}", **common)(
              x, skips[-n:], temb, context)
      skips = skips[:-n]
    x = nn.silu(blocks.group_norm(c.norm_num_groups, c.norm_eps, dt, "conv_norm_out")(x))
    return blocks.conv(c.out_channels, dt, "conv_out")(x)

  def dummy_inputs(self, batch: int = 1, tokens: int = 77):
    s, c = self.config.sample_size, self.config
    args = (jnp.zeros((batch, s, s, c.in_channels), self.dtype), jnp.zeros((batch,), jnp.int32),
            jnp.zeros((batch, tokens, c.cross_attention_dim), self.dtype))
    if c.addition_time_embed_dim:
      pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
      args += (jnp.zeros((batch, pooled), self.dtype), jnp.zeros((batch, 6), jnp.float32))
    return args

  def init_params(self, seed: int = 0) -> dict:
    """Random params (numpy, host), as our init draws them: for tests and the tiny demo model."""
    params = jax.jit(self.init)(jax.random.PRNGKey(seed), *self.dummy_inputs())["params"]
    return jax.tree_util.tree_map(np.asarray, params)

  def abstract_params(self) -> dict:
    return torch_layout.abstract_params(self, *self.dummy_inputs())


def guidance_embedding(w, dim: int):
  """diffusers' get_guidance_scale_embedding: sinusoids of 1000 * w (B,) -> (B, dim) float32."""
  w = jnp.asarray(w, jnp.float32) * 1000.0
  half = dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(np.log(10000.0) / (half - 1)))
  emb = w[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


# diffusers nests the time MLPs as time_embedding.linear_1 (add_embedding.linear_1 in SDXL); we
# keep them flat (one module fewer).
def _rename_to_ours(state: dict) -> dict:
  return {k.replace("time_embedding.linear_", "time_embedding_linear_")
          .replace("time_embedding.cond_proj", "time_embedding_cond_proj")
          .replace("add_embedding.linear_", "add_embedding_linear_"): v for k, v in state.items()}


def _rename_to_diffusers(state: dict) -> dict:
  return {k.replace("time_embedding_linear_", "time_embedding.linear_")
          .replace("time_embedding_cond_proj", "time_embedding.cond_proj")
          .replace("add_embedding_linear_", "add_embedding.linear_"): v for k, v in state.items()}


def params_from_diffusers(state: Mapping[str, np.ndarray], config, source: str = "unet") -> dict:
  """diffusers UNet state_dict -> our param tree (float32 numpy); strict."""
  module = UNet2DConditionModel.from_config(config)
  return torch_layout.from_torch(state, module.abstract_params(), source, rename=_rename_to_ours)


def params_to_diffusers(params: Mapping[str, Any], config=None) -> dict[str, np.ndarray]:
  """Our param tree -> diffusers UNet state_dict (numpy, PyTorch layouts)."""
  return _rename_to_diffusers(torch_layout.to_torch(params))
