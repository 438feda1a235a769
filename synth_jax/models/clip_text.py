"""CLIP text transformer (Flax linen) that loads transformers' `CLIPTextModel` weights.

Used by Stable Diffusion (SD1: CLIP ViT-L/14 text; SD2: OpenCLIP-H text, whose penultimate hidden
state is what the UNet sees) and by the CLIP-based prompt tools. The parameter tree mirrors the HF
module names (`embeddings/token_embedding/embedding`, `encoder/layers_0/self_attn/q_proj/kernel`,
...), so conversion is a rename plus a transpose of Linear weights.

Textual inversion trains one row of the token table: either pass `inputs_embeds` (the looked-up
rows, with the trained row patched in) or replace the param at `embeddings/token_embedding/embedding`.
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
from synth_jax.models.common import ACTIVATIONS as _ACTIVATIONS  # one table for both CLIP towers

TOKEN_EMBEDDING = "embeddings/token_embedding/embedding"  # path textual inversion edits


class _Mlp(nn.Module):
  intermediate_size: int
  hidden_act: str
  dtype: Any

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x)
    h = _ACTIVATIONS[self.hidden_act](h)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class _Attention(nn.Module):
  num_heads: int
  dtype: Any

  @nn.compact
  def __call__(self, x, mask):
    b, t, d = x.shape
    dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)  # noqa: E731
    split = lambda y: y.reshape(b, t, self.num_heads, d // self.num_heads)  # noqa: E731
    q, k, v = (split(dense(n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
    # BTNH layout: cuDNN flash attention on GPU, XLA elsewhere. The causal mask is built in.
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)
    return dense("out_proj")(out.reshape(b, t, d))


class _EncoderLayer(nn.Module):
  num_heads: int
  intermediate_size: int
  hidden_act: str
  layer_norm_eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x, mask):
    norm = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)  # noqa: E731
    x = x + _Attention(self.num_heads, self.dtype, name="self_attn")(norm("layer_norm1")(x), mask)
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
  def __call__(self, x, mask):
    hidden_states = [x]
    for i in range(self.num_hidden_layers):
      x = _EncoderLayer(self.num_heads, self.intermediate_size, self.hidden_act,
                        self.layer_norm_eps, self.dtype, name=f"layers_{i}")(x, mask)
      hidden_states.append(x)
    return tuple(hidden_states)


class _Embeddings(nn.Module):
  vocab_size: int
  hidden_size: int
  max_position_embeddings: int
  dtype: Any

  @nn.compact
  def __call__(self, input_ids, inputs_embeds=None):
    tok = nn.Embed(self.vocab_size, self.hidden_size, dtype=self.dtype, name="token_embedding")
    pos = nn.Embed(self.max_position_embeddings, self.hidden_size, dtype=self.dtype,
                   name="position_embedding")
    t = input_ids.shape[-1]
    if t > self.max_position_embeddings:
      raise ConfigError(f"sequence length {t} exceeds max_position_embeddings "
                        f"{self.max_position_embeddings}; truncate prompts to that length")
    if inputs_embeds is None:
      inputs_embeds = tok(input_ids)
    else:
      tok(input_ids[:, :1])  # keep the table in the tree even when bypassed
    return inputs_embeds.astype(self.dtype) + pos(jnp.arange(t)[None])


class CLIPTextModel(nn.Module):
  """CLIP text tower; pass `projection_dim` for `CLIPTextModelWithProjection`.

  Call `(input_ids, attention_mask=None, inputs_embeds=None)`; returns a dict with
  `last_hidden_state` (after the final layer norm), `pooler_output` (the EOS position),
  `hidden_states` (embeddings + every layer's output, before the final norm, like HF) and
  `text_embeds` when the projection exists, and `prompt_embeds`: what diffusers feeds the UNet
  (the final layer norm applied to the output `clip_skip` layers before the last).
  """
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 2
  projection_dim: int | None = None
  dtype: Any = jnp.float32

  @classmethod
  def from_config(cls, config: Mapping[str, Any], dtype=jnp.float32,
                  with_projection: bool | None = None) -> "CLIPTextModel":
    """Builds from a transformers config.json dict (`CLIPTextConfig` or a full `CLIPConfig`)."""
    config = dict(config.get("text_config") or config)
    if config.get("hidden_act", "quick_gelu") not in _ACTIVATIONS:
      raise ConfigError(f"CLIP text hidden_act {config['hidden_act']!r} is not supported; "
                        f"use one of {sorted(_ACTIVATIONS)}")
    if with_projection is None:
      with_projection = "CLIPTextModelWithProjection" in config.get("architectures", [])
    return cls(
        vocab_size=config.get("vocab_size", 49408), hidden_size=config.get("hidden_size", 512),
        intermediate_size=config.get("intermediate_size", 2048),
        num_hidden_layers=config.get("num_hidden_layers", 12),
        num_attention_heads=config.get("num_attention_heads", 8),
        max_position_embeddings=config.get("max_position_embeddings", 77),
        hidden_act=config.get("hidden_act", "quick_gelu"),
        layer_norm_eps=config.get("layer_norm_eps", 1e-5),
        eos_token_id=config.get("eos_token_id", 2),
        projection_dim=config.get("projection_dim", 512) if with_projection else None, dtype=dtype)

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, inputs_embeds=None, clip_skip: int = 0):
    input_ids = jnp.asarray(input_ids)
    x = _Embeddings(self.vocab_size, self.hidden_size, self.max_position_embeddings, self.dtype,
                    name="embeddings")(input_ids, inputs_embeds)
    mask = None
    if attention_mask is not None:  # padding mask on keys, combined with the causal one
      mask = jnp.asarray(attention_mask, bool)[:, None, None, :]
    hidden_states = _Encoder(self.num_hidden_layers, self.num_attention_heads,
                             self.intermediate_size, self.hidden_act, self.layer_norm_eps,
                             self.dtype, name="encoder")(x, mask)
    x = hidden_states[-1]
    final_norm = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="final_layer_norm")
    last = final_norm(x)
    if self.eos_token_id == 2:
      # Old configs carry a wrong eos id; HF then pools at the highest token id (the EOT token).
      eos_pos = jnp.argmax(input_ids, axis=-1)
    else:
      eos_pos = jnp.argmax((input_ids == self.eos_token_id).astype(jnp.int32), axis=-1)
    pooled = jnp.take_along_axis(last, eos_pos[:, None, None], axis=1)[:, 0]
    out = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden_states,
           "prompt_embeds": final_norm(hidden_states[-(clip_skip + 1)]) if clip_skip else last}
    if self.projection_dim is not None:
      out["text_embeds"] = nn.Dense(self.projection_dim, use_bias=False, dtype=self.dtype,
                                    name="text_projection")(pooled)
    return out

  def init_params(self, seed: int = 0) -> dict:
    """Random params as numpy (host), same tree as `params_from_hf` returns."""
    ids = jnp.zeros((1, min(8, self.max_position_embeddings)), jnp.int32)
    params = jax.jit(self.init)(jax.random.PRNGKey(seed), ids)["params"]
    return jax.tree_util.tree_map(np.asarray, params)

  def shapes(self) -> dict:
    ids = jax.ShapeDtypeStruct((1, min(8, self.max_position_embeddings)), jnp.int32)
    return jax.eval_shape(self.init, jax.random.PRNGKey(0), ids)["params"]


def _hf_to_flax_key(key: str) -> str:
  key = key.removeprefix("text_model.")
  key = re.sub(r"layers\.(\d+)\.", r"layers_\1.", key)
  key = key.replace(".", "/")
  if key.endswith("embedding/weight"):
    return key[:-len("weight")] + "embedding"
  if re.search(r"(layer_norm\d?|final_layer_norm)/weight$", key):
    return key[:-len("weight")] + "scale"
  return key[:-len("weight")] + "kernel" if key.endswith("/weight") else key


def params_from_hf(state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any] | CLIPTextModel,
                   source: str = "CLIP text encoder", dtype=None) -> dict:
  """HF state dict (with or without `text_model.`) -> our numpy param tree, strictly checked."""
  model = config if isinstance(config, CLIPTextModel) else CLIPTextModel.from_config(config)
  flat = {}
  for k, v in state_dict.items():
    if k.endswith("position_ids"):  # a buffer some transformers versions saved; not a weight
      continue
    v = np.asarray(v)
    fk = _hf_to_flax_key(k)
    flat[fk] = weights.linear_kernel(v) if fk.endswith("kernel") else v
  return weights.merge_strict(model.shapes(), flat, source, dtype=dtype or np.float32)


def params_to_hf(params: Mapping[str, Any], config: Mapping[str, Any] | CLIPTextModel | None = None
                 ) -> dict[str, np.ndarray]:
  """Our param tree -> HF state dict with `text_model.` keys (loads in transformers 4.x and 5.x)."""
  del config  # the tree alone determines the names
  out = {}
  for k, v in weights.flatten(params).items():
    v = np.asarray(v)
    parts = k.split("/")
    leaf = parts[-1]
    name = ".".join(re.sub(r"^layers_(\d+)$", r"layers.\1", p) for p in parts[:-1])
    if leaf == "kernel":
      v, leaf = weights.linear_kernel(v), "weight"
    elif leaf in ("scale", "embedding"):
      leaf = "weight"
    full = f"{name}.{leaf}"
    out[full if full.startswith("text_projection") else "text_model." + full] = np.ascontiguousarray(v)
  return out
