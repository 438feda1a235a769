"""CLIP's image tower: `vit.ViT` with CLIP's options, loading transformers' `CLIPVisionModel(WithProjection)`.

CLIP's ViT is the models issue's ViT with four switches (`to_vit()` returns it): no patch-conv bias,
a LayerNorm on the tokens before the encoder (HF `pre_layrnorm`, our `pre_norm`), the config's MLP
activation (OpenAI: quick_gelu; OpenCLIP: exact gelu) and a bias-free head, which is CLIP's
`visual_projection`. HF's `post_layernorm` of the class token is the ViT's `encoder_norm` (a
LayerNorm is per token, so normalizing all tokens and taking the first is the same numbers). The
parameters are therefore the ViT's big_vision tree (`embedding/kernel`, `cls`, `pos_embedding`,
`Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel`, ..., `head/kernel`), and
`sharding.logical_axes` / `logical_shardings` treat them like any ViT. `params_from_hf` renames and
re-lays-out HF tensors (Linear/Conv transposes, fused q/k/v heads split, class token and position
table given the ViT's leading axes); load errors name both our key and the HF one.

    model = CLIPVisionModel.from_config(hf_config_dict, with_projection=True)
    out = model.apply({"params": params}, pixel_values_nhwc)   # normalized float pixels, NHWC
    out["image_embeds"]                                        # (N, projection_dim), not normalized
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synth_jax.errors import ConfigError
from synth_jax.models import weights
from synth_jax.models.common import ACTIVATIONS, reinit_head
from synth_jax.models.vit import ViT


class CLIPVisionModel(nn.Module):
  """CLIP image tower (HF config field names); pass `projection_dim` for `CLIPVisionModelWithProjection`.

  Call with NHWC float pixels already normalized with the CLIP mean/std. Returns a dict with
  `last_hidden_state` (encoder output, no final norm, like HF), `pooler_output` (post_layernorm of
  the class token), `hidden_states` (input of the encoder and every layer's output) and
  `image_embeds` when the projection exists. The variables are those of `to_vit()` (shared scope).
  """
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  image_size: int = 224
  patch_size: int = 16
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  projection_dim: int | None = None
  dtype: Any = jnp.float32

  @classmethod
  def from_config(cls, config: Mapping[str, Any], dtype=jnp.float32,
                  with_projection: bool | None = None) -> "CLIPVisionModel":
    """Builds from a transformers config.json dict (`CLIPVisionConfig` or a full `CLIPConfig`)."""
    full = dict(config)
    config = dict(config.get("vision_config") or config)
    if config.get("hidden_act", "quick_gelu") not in ACTIVATIONS:
      raise ConfigError(f"CLIP vision hidden_act {config['hidden_act']!r} is not supported; "
                        f"use one of {sorted(ACTIVATIONS)}")
    if with_projection is None:
      with_projection = "CLIPVisionModelWithProjection" in config.get("architectures", [])
    proj = config.get("projection_dim", full.get("projection_dim", 512))
    return cls(hidden_size=config.get("hidden_size", 768),
               intermediate_size=config.get("intermediate_size", 3072),
               num_hidden_layers=config.get("num_hidden_layers", 12),
               num_attention_heads=config.get("num_attention_heads", 12),
               image_size=config.get("image_size", 224), patch_size=config.get("patch_size", 32),
               hidden_act=config.get("hidden_act", "quick_gelu"),
               layer_norm_eps=config.get("layer_norm_eps", 1e-5),
               projection_dim=proj if with_projection else None, dtype=dtype)

  def to_vit(self, **kw) -> ViT:
    """The same tower as a `ViT` (returns `(image_embeds or pre_logits, out)`); `kw` overrides fields."""
    fields = dict(num_classes=self.projection_dim or 0, width=self.hidden_size, depth=self.num_hidden_layers,
                  mlp_dim=self.intermediate_size, num_heads=self.num_attention_heads, patch_size=self.patch_size,
                  ln_eps=self.layer_norm_eps, mlp_act=self.hidden_act, patch_bias=False, pre_norm=True,
                  head_bias=False, dtype=self.dtype)
    return ViT(**{**fields, **kw}, parent=None)  # unbound even when called inside a module method

  def setup(self):
    self.tower = self.to_vit()
    nn.share_scope(self, self.tower)  # the ViT's variables sit at the top, not under "tower/"

  def __call__(self, pixel_values):
    n, h, w, _ = pixel_values.shape
    if (h, w) != (self.image_size, self.image_size):
      raise ConfigError(f"CLIP vision input is {h}x{w} but the model expects "
                        f"{self.image_size}x{self.image_size}; resize/crop images to that size")
    embeds, out = self.tower(pixel_values)
    layers = tuple(out[f"block{i:02d}"] for i in range(self.num_hidden_layers))
    hidden_states = (out["tokens"],) + layers
    res = {"last_hidden_state": hidden_states[-1], "pooler_output": out["encoded"][:, 0],
           "hidden_states": hidden_states}
    if self.projection_dim is not None:
      res["image_embeds"] = embeds
    return res

  def shapes(self) -> dict:
    pixels = jax.ShapeDtypeStruct((1, self.image_size, self.image_size, 3), jnp.float32)
    return jax.eval_shape(self.init, jax.random.PRNGKey(0), pixels)["params"]

  def init_params(self, seed: int = 0) -> dict:
    """Random params as numpy (host), same tree as `params_from_hf` returns."""
    pixels = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
    init_key, head_key = jax.random.split(jax.random.PRNGKey(seed))
    params = jax.jit(self.init)(init_key, pixels)["params"]
    if self.projection_dim is not None:  # the ViT head starts at zero; a projection must not
      params = reinit_head(params, head_key)
    return jax.tree_util.tree_map(np.asarray, params)


_QKV = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}


def _to_vit(key: str) -> tuple[str | None, str | None]:
  """HF CLIP vision tensor name -> (our flat key, layout), or (None, None) for a name no rule knows."""
  k = key.removeprefix("vision_model.")
  mod, _, leaf = k.rpartition(".")
  ln, lin = ("scale" if leaf == "weight" else "bias"), ("kernel" if leaf == "weight" else "bias")
  top = {"embeddings.class_embedding": ("cls", "token"),
         "embeddings.position_embedding.weight": ("pos_embedding", "token"),
         "embeddings.patch_embedding.weight": ("embedding/kernel", "conv"),
         "visual_projection.weight": ("head/kernel", "linear")}
  if k in top:
    return top[k]
  if mod in ("pre_layrnorm", "post_layernorm") and leaf in ("weight", "bias"):
    return f"{'pre_norm' if mod == 'pre_layrnorm' else 'Transformer/encoder_norm'}/{ln}", None
  m = re.fullmatch(r"encoder\.layers\.(\d+)\.(layer_norm[12]|mlp\.fc[12]|self_attn\.\w+)", mod)
  if not m or leaf not in ("weight", "bias"):
    return None, None
  blk, sub = f"Transformer/encoderblock_{m[1]}", m[2]
  att = f"{blk}/MultiHeadDotProductAttention_0"
  if sub.startswith("layer_norm"):
    return f"{blk}/LayerNorm_{int(sub[-1]) - 1}/{ln}", None
  if sub.startswith("mlp"):
    return f"{blk}/MlpBlock_0/Dense_{int(sub[-1]) - 1}/{lin}", "linear"
  proj = sub.removeprefix("self_attn.")
  if proj in _QKV:
    return f"{att}/{_QKV[proj]}/{lin}", "split_heads"
  if proj == "out_proj":
    return f"{att}/out/{lin}", "merge_heads"
  return None, None


def _relayout(v: np.ndarray, layout: str | None, heads: int) -> np.ndarray:
  """An HF tensor in our layout; a tensor that cannot be reshaped is kept for merge_strict to name."""
  try:
    if layout == "token":  # (D,) class token / (T, D) table -> (1, 1, D) / (1, T, D)
      return v.reshape(1, -1, v.shape[-1])
    if layout == "conv":
      return weights.conv_kernel(v)
    if v.ndim == 2 and layout == "linear":
      return weights.linear_kernel(v)
    if layout == "split_heads":  # (H*hd, D) -> (D, H, hd); bias (H*hd,) -> (H, hd)
      return v.T.reshape(v.shape[1], heads, -1) if v.ndim == 2 else v.reshape(heads, -1)
    if layout == "merge_heads" and v.ndim == 2:  # (D, H*hd) -> (H, hd, D)
      return v.T.reshape(heads, -1, v.shape[0])
  except ValueError:
    pass
  return v


def hf_names(model: CLIPVisionModel) -> list[str]:
  """Every tensor name of the HF `CLIPVisionModel(WithProjection)` state dict that `model` loads."""
  names = ["embeddings.class_embedding", "embeddings.position_embedding.weight", "embeddings.patch_embedding.weight"]
  subs = ["layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2", *(f"self_attn.{p}" for p in (*_QKV, "out_proj"))]
  mods = ["pre_layrnorm", "post_layernorm"] + [f"encoder.layers.{i}.{s}" for i in range(model.num_hidden_layers)
                                               for s in subs]
  names += [f"{m}.{leaf}" for m in mods for leaf in ("weight", "bias")]
  names = [f"vision_model.{n}" for n in names]
  return names + (["visual_projection.weight"] if model.projection_dim is not None else [])


def params_from_hf(state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any] | CLIPVisionModel,
                   source: str = "CLIP vision encoder", dtype=None) -> dict:
  """HF state dict (with or without `vision_model.`) -> our numpy ViT param tree, strictly checked."""
  model = config if isinstance(config, CLIPVisionModel) else CLIPVisionModel.from_config(config)
  flat = {}
  for k, v in state_dict.items():
    if k.endswith("position_ids"):  # a buffer some transformers versions saved; not a weight
      continue
    ours, layout = _to_vit(k)
    flat[ours or k] = _relayout(np.asarray(v), layout, model.num_attention_heads)  # unknown: keeps its HF name
  theirs = {_to_vit(n)[0]: n for n in hf_names(model)}
  return weights.merge_strict(model.shapes(), flat, source, dtype=dtype or np.float32,
                              describe=lambda k: f"{k} (HF {theirs.get(k, '?')})")
