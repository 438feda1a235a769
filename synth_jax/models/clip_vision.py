"""CLIP vision tower (Flax linen) that loads transformers' `CLIPVisionModel(WithProjection)` weights.

CLIP's ViT differs from `synth_jax.models.vit` in ways that change the numbers, so it is its own
module rather than options on that one: the patch conv has no bias, the class token is a bare (D,)
vector, a LayerNorm (`pre_layrnorm`, HF's spelling) runs before the encoder, the MLP uses the
config's activation (OpenAI: quick_gelu; OpenCLIP: exact gelu) and the pooled class token goes
through `post_layernorm` and a bias-free `visual_projection`. The parameter tree mirrors the HF
names (`embeddings/patch_embedding/kernel`, `encoder/layers_0/self_attn/q_proj/kernel`, ...), so
conversion is a rename plus the Linear/Conv transposes. Encoder layers reuse the text tower's MLP.

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
from synth_jax.models import clip_text, weights

# Same MLP and activations as the text tower (one definition of quick_gelu for both).
_Mlp, _ACTIVATIONS = clip_text._Mlp, clip_text._ACTIVATIONS  # pylint: disable=protected-access


class _Attention(nn.Module):
  num_heads: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    b, t, d = x.shape
    dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)  # noqa: E731
    split = lambda y: y.reshape(b, t, self.num_heads, d // self.num_heads)  # noqa: E731
    q, k, v = (split(dense(n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
    out = jax.nn.dot_product_attention(q, k, v)  # bidirectional: no mask on image tokens
    return dense("out_proj")(out.reshape(b, t, d))


class _EncoderLayer(nn.Module):
  num_heads: int
  intermediate_size: int
  hidden_act: str
  layer_norm_eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x):
    norm = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)  # noqa: E731
    x = x + _Attention(self.num_heads, self.dtype, name="self_attn")(norm("layer_norm1")(x))
    mlp = _Mlp(self.intermediate_size, self.hidden_act, self.dtype, name="mlp")
    return x + mlp(norm("layer_norm2")(x))


class _Encoder(nn.Module):
  num_hidden_layers: int
  num_heads: int
  intermediate_size: int
  hidden_act: str
  layer_norm_eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x):
    hidden_states = [x]
    for i in range(self.num_hidden_layers):
      x = _EncoderLayer(self.num_heads, self.intermediate_size, self.hidden_act,
                        self.layer_norm_eps, self.dtype, name=f"layers_{i}")(x)
      hidden_states.append(x)
    return tuple(hidden_states)


class _Embeddings(nn.Module):
  hidden_size: int
  patch_size: int
  image_size: int
  dtype: Any

  @nn.compact
  def __call__(self, pixels):
    n, h, w, _ = pixels.shape
    if (h, w) != (self.image_size, self.image_size):
      raise ConfigError(f"CLIP vision input is {h}x{w} but the model expects "
                        f"{self.image_size}x{self.image_size}; resize/crop images to that size")
    x = nn.Conv(self.hidden_size, (self.patch_size,) * 2, strides=(self.patch_size,) * 2,
                padding="VALID", use_bias=False, dtype=self.dtype, name="patch_embedding")(pixels)
    x = x.reshape(n, -1, self.hidden_size)
    cls = self.param("class_embedding", nn.initializers.normal(0.02), (self.hidden_size,))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (n, 1, self.hidden_size)), x], 1)
    num_positions = (self.image_size // self.patch_size) ** 2 + 1
    pos = nn.Embed(num_positions, self.hidden_size, dtype=self.dtype, name="position_embedding")
    return x + pos(jnp.arange(num_positions)[None])


class CLIPVisionModel(nn.Module):
  """CLIP image tower; pass `projection_dim` for `CLIPVisionModelWithProjection`.

  Call with NHWC float pixels already normalized with the CLIP mean/std. Returns a dict with
  `last_hidden_state` (encoder output, no final norm, like HF), `pooler_output` (post_layernorm of
  the class token), `hidden_states` (input of the encoder and every layer's output) and
  `image_embeds` when the projection exists.
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
    if config.get("hidden_act", "quick_gelu") not in _ACTIVATIONS:
      raise ConfigError(f"CLIP vision hidden_act {config['hidden_act']!r} is not supported; "
                        f"use one of {sorted(_ACTIVATIONS)}")
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

  @nn.compact
  def __call__(self, pixel_values):
    x = _Embeddings(self.hidden_size, self.patch_size, self.image_size, self.dtype,
                    name="embeddings")(jnp.asarray(pixel_values, self.dtype))
    x = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="pre_layrnorm")(x)
    hidden_states = _Encoder(self.num_hidden_layers, self.num_attention_heads,
                             self.intermediate_size, self.hidden_act, self.layer_norm_eps,
                             self.dtype, name="encoder")(x)
    x = hidden_states[-1]
    pooled = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="post_layernorm")(x[:, 0])
    out = {"last_hidden_state": x, "pooler_output": pooled, "hidden_states": hidden_states}
    if self.projection_dim is not None:
      out["image_embeds"] = nn.Dense(self.projection_dim, use_bias=False, dtype=self.dtype,
                                     name="visual_projection")(pooled)
    return out

  def shapes(self) -> dict:
    pixels = jax.ShapeDtypeStruct((1, self.image_size, self.image_size, 3), jnp.float32)
    return jax.eval_shape(self.init, jax.random.PRNGKey(0), pixels)["params"]

  def init_params(self, seed: int = 0) -> dict:
    """Random params as numpy (host), same tree as `params_from_hf` returns."""
    pixels = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
    params = jax.jit(self.init)(jax.random.PRNGKey(seed), pixels)["params"]
    return jax.tree_util.tree_map(np.asarray, params)


def _hf_to_flax_key(key: str) -> str:
  key = key.removeprefix("vision_model.")
  key = re.sub(r"layers\.(\d+)\.", r"layers_\1.", key).replace(".", "/")
  if key.endswith("position_embedding/weight"):
    return key[:-len("weight")] + "embedding"
  if re.search(r"(layer_norm\d|pre_layrnorm|post_layernorm)/weight$", key):
    return key[:-len("weight")] + "scale"
  return key[:-len("weight")] + "kernel" if key.endswith("/weight") else key


def params_from_hf(state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any] | CLIPVisionModel,
                   source: str = "CLIP vision encoder", dtype=None) -> dict:
  """HF state dict (with or without `vision_model.`) -> our numpy param tree, strictly checked."""
  model = config if isinstance(config, CLIPVisionModel) else CLIPVisionModel.from_config(config)
  flat = {}
  for k, v in state_dict.items():
    if k.endswith("position_ids"):  # a buffer some transformers versions saved; not a weight
      continue
    v, fk = np.asarray(v), _hf_to_flax_key(k)
    if fk.endswith("kernel"):
      v = weights.conv_kernel(v) if v.ndim == 4 else weights.linear_kernel(v)
    flat[fk] = v
  return weights.merge_strict(model.shapes(), flat, source, dtype=dtype or np.float32)
