"""big_vision / google-research vision_transformer ViT .npz -> our ViT tree.

Accepted layouts (the keys are '/'-joined Flax paths, optionally under 'params/'):
  * vision_transformer / augreg: Transformer/posembed_input/pos_embedding (1, 1+N, D),
    MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3;
  * big_vision: a top-level pos_embedding of (1, N, D) added before the class token is prepended
    (loaded as a zero class-token position, which is the same function), MultiHeadDotProductAttention_0,
    LayerNorm_1, MlpBlock_0, and the scanned layout Transformer/encoderblock/... with a leading
    layer axis.
Only class-token ("tok") pooling is supported; a checkpoint without `cls` (gap/map heads) is refused.
Position embeddings are resampled bilinearly when the image size differs.
"""
from __future__ import annotations

import re

import numpy as np

from synth_jax.errors import WeightsError
from synth_jax.models import common, weights

_RENAMES = (("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0"), ("LayerNorm_2", "LayerNorm_1"),
            ("MlpBlock_3", "MlpBlock_0"))


def vit_from_big_vision(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """npz tensors -> flat 'params/...' keys in our layout."""
  flat = {}
  for k, v in raw.items():
    if k.startswith(("opt/", "opt_state/")):
      continue  # optimizer state saved beside the params
    k = k.removeprefix("params/")
    for old, new in _RENAMES:
      k = k.replace(old, new)
    if m := re.fullmatch(r"Transformer/encoderblock/(.+)", k):  # scanned layers: split the layer axis
      for i in range(v.shape[0]):
        flat[f"Transformer/encoderblock_{i}/{m[1]}"] = np.asarray(v[i])
      continue
    flat[k] = np.asarray(v)
  for old in ("Transformer/posembed_input/pos_embedding", "Transformer/pos_embedding"):
    if old in flat:
      flat["pos_embedding"] = flat.pop(old)
  if "cls" not in flat:
    raise WeightsError("this ViT checkpoint has no 'cls' token (gap/map pooling); only class-token ViTs "
                       "are supported: use a 'tok' checkpoint such as the augreg ones")
  pos = flat.get("pos_embedding")
  if pos is not None and int(round(np.sqrt(pos.shape[1]))) ** 2 == pos.shape[1]:
    # big_vision adds the position embedding before prepending cls: cls has position 0.
    flat["pos_embedding"] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
  return {f"params/{k}": v for k, v in flat.items()}


def load_vit(path: str, model, image_size=None, keep_head=None, place=None):
  """big_vision / augreg ViT .npz -> (model, params, {})."""
  flat = vit_from_big_vision(weights.read_tensors(path))
  size = common.vit_image_size(model, flat.get("params/pos_embedding", np.zeros((1, 1, 1))).shape[1], image_size)
  flat = common.fit_posemb(flat, "params/pos_embedding", model, size)
  model, params, _ = common.load_flat(model, flat, path, image_size=size, keep_head=keep_head,
                                      place=place)
  return model, params, {}
