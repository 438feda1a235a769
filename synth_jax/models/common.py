"""What ResNet and ViT share: strict loading into a model, head re-initialization.

Parameters stay plain arrays (no boxed `nn.Partitioned`), so importers and optimizers see ordinary
trees; `synth_jax.sharding.logical_axes(tree)` names every dimension by rule instead.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from synth_jax.errors import WeightsError
from synth_jax.models import weights
from synth_jax.models.norm import expand_to_domains

HEAD = "params/head/"

# Hugging Face `hidden_act` names -> functions; shared by ViT (CLIP's image tower) and the CLIP text tower.
ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


def abstract_variables(model, image_size: int) -> dict:
  """ShapeDtypeStructs of every variable collection, without running the init."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x)


def load_flat(model, flat: Mapping[str, np.ndarray], source: str, *, image_size: int,
              keep_head: bool | None = None, rng=None, place=None) -> tuple[Any, dict, dict]:
  """Fills `model`'s variables from `flat` ('params/...' and 'batch_stats/...' keys).

  Plain (C,) tensors are copied to every domain of per-domain norms. The checkpoint's head is kept
  when `keep_head` is True, or None and its shape fits; otherwise a fresh head is initialized
  (`reinit_head`). Missing, unexpected or mis-shaped tensors raise WeightsError naming them.
  Returns (model, params, batch_stats) with batch_stats {} for models without BatchNorm.
  `place` (variables -> shardings, as the random inits take it): each leaf goes from the host
  straight to its shards, so a large model never lands whole on one device first; without it the
  arrays are plain jnp arrays on the default device (interactive use).
  """
  target = abstract_variables(model, image_size)
  tflat = weights.flatten(target)
  flat = expand_to_domains(dict(flat), tflat)
  has_head = any(k.startswith(HEAD) for k in tflat)
  fits = all(k in flat and tuple(flat[k].shape) == tuple(v.shape)
             for k, v in tflat.items() if k.startswith(HEAD))
  if not has_head or keep_head is False or (keep_head is None and not fits):
    flat = {k: v for k, v in flat.items() if not k.startswith(HEAD)}
    dont_load = (re.escape(HEAD),) if has_head else ()
  else:
    dont_load = ()
  merged = weights.merge_strict(target, flat, source, dont_load=dont_load)
  params = merged["params"]
  if dont_load:  # the head leaves are still ShapeDtypeStructs
    params = reinit_head(params, rng if rng is not None else jax.random.key(0))
  params = jax.tree.map(np.asarray, params)
  stats = jax.tree.map(np.asarray, merged.get("batch_stats", {}))
  if place is None:
    return model, jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, stats)
  variables = {"params": params, "batch_stats": stats}
  placed = jax.device_put(variables, place(variables))
  return model, placed["params"], placed["batch_stats"]


def reinit_head(params: Mapping, rng, num_classes: int | None = None, zero: bool = False) -> dict:
  """A new classifier head (bridged transfer's "FC reinit"); everything else is kept.

  Kernel ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like torch.nn.Linear (or zeros), bias zeros.
  `num_classes` changes the head's width (then build the model with the same num_classes).
  """
  head = params["head"]
  fan_in = head["kernel"].shape[0]
  n = num_classes or head["kernel"].shape[1]
  dtype = head["kernel"].dtype
  if zero:
    kernel = jnp.zeros((fan_in, n), dtype)
  else:
    lim = 1.0 / np.sqrt(fan_in)
    kernel = jax.random.uniform(rng, (fan_in, n), jnp.float32, -lim, lim).astype(dtype)
  out = dict(params)
  out["head"] = {"kernel": kernel}
  if "bias" in head:  # CLIP's projection head has none
    out["head"]["bias"] = jnp.zeros((n,), head["bias"].dtype)
  return out


def resample_posemb(pos: np.ndarray, grid: tuple[int, int], num_prefix: int = 1) -> np.ndarray:
  """(1, prefix + h*w, D) -> (1, prefix + H*W, D): the grid part resized bilinearly (no antialias,
  = torch F.interpolate(mode="bilinear", align_corners=False)), the class-token part kept."""
  pos = np.asarray(pos, np.float32)
  prefix, tokens = pos[:, :num_prefix], pos[:, num_prefix:]
  old = int(round(np.sqrt(tokens.shape[1])))
  if old * old != tokens.shape[1]:
    raise WeightsError(f"position embedding with {tokens.shape[1]} grid tokens is not square; "
                               "cannot resample it")
  if (old, old) == tuple(grid):
    return pos
  g = tokens.reshape(old, old, -1)
  g = jax.image.resize(g, (*grid, g.shape[-1]), method="bilinear", antialias=False)
  return np.concatenate([prefix, np.asarray(g).reshape(1, grid[0] * grid[1], -1)], axis=1)


def vit_image_size(model, pos_tokens: int, image_size: int | None) -> int:
  """The image size a ViT is built for: given, or what the checkpoint's position embedding implies."""
  patch = model.dims()[4]
  if image_size:
    return int(image_size)
  return int(round(np.sqrt(pos_tokens - 1))) * patch


def fit_posemb(flat: dict, key: str, model, image_size: int) -> dict:
  patch = model.dims()[4]
  if key in flat:
    flat = dict(flat)
    flat[key] = resample_posemb(flat[key], (image_size // patch, image_size // patch))
  return flat
