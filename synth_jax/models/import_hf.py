"""Hugging Face transformers folders (config.json + model.safetensors / pytorch_model.bin) -> our trees.

ResNetModel / ResNetForImageClassification and ViTModel / ViTForImageClassification. The config is
checked for what the tensor shapes cannot reveal (stride placement, activation, LayerNorm epsilon).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from synth_jax.errors import WeightsError
from synth_jax.models import common, weights
from synth_jax.models.import_torch import BN_NAMES


def read_folder(folder: str) -> tuple[dict, dict[str, np.ndarray]]:
  """-> (config dict, tensors) of a save_pretrained folder; sharded safetensors are merged."""
  cfg_path = os.path.join(folder, "config.json")
  if not os.path.isfile(cfg_path):
    raise WeightsError(f"{folder!r} is not a Hugging Face model folder (no config.json); pass the folder "
                       "save_pretrained wrote")
  with open(cfg_path) as f:
    config = json.load(f)
  files = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
  if not files:
    files = [n for n in ("pytorch_model.bin",) if os.path.exists(os.path.join(folder, n))]
  if not files:
    raise WeightsError(f"{folder!r} has no model.safetensors or pytorch_model.bin; re-save it with save_pretrained")
  tensors = {}
  for n in files:
    tensors.update(weights.read_tensors(os.path.join(folder, n)))
  return config, tensors


def _expect(config: dict, folder: str, **want):
  for k, v in want.items():
    if k in config and config[k] != v:
      raise WeightsError(f"{folder}: config {k}={config[k]!r} is not supported (expected {v!r}); "
                         "use a torchvision-style checkpoint")


# ---------------------------------------------------------------- ResNet
def resnet_from_hf(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF ResNet state_dict -> flat Flax keys ('params/...', 'batch_stats/...')."""
  out = {}
  for name, v in sd.items():
    key = name.removeprefix("resnet.")
    *parts, leaf = key.split(".")
    mod = None
    if key.startswith("classifier.1."):
      out[f"params/head/{'kernel' if leaf == 'weight' else 'bias'}"] = (
          weights.linear_kernel(v) if leaf == "weight" else v)
      continue
    if leaf == "num_batches_tracked":
      continue
    path = ".".join(parts)
    if m := re.fullmatch(r"embedder\.embedder\.(convolution|normalization)", path):
      mod = "conv1" if m[1] == "convolution" else "bn1"
    elif m := re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(convolution|normalization)", path):
      mod = f"layer{int(m[1]) + 1}_{m[2]}/downsample_{'conv' if m[3] == 'convolution' else 'bn'}"
    elif m := re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.(convolution|normalization)", path):
      kind = "conv" if m[4] == "convolution" else "bn"
      mod = f"layer{int(m[1]) + 1}_{m[2]}/{kind}{int(m[3]) + 1}"
    if mod and "conv" in mod.split("/")[-1] and leaf == "weight":
      out[f"params/{mod}/kernel"] = weights.conv_kernel(v)
    elif mod and "bn" in mod.split("/")[-1] and leaf in BN_NAMES:
      out[BN_NAMES[leaf].format(mod)] = v
    else:
      out[name] = v
  return out


def load_resnet(folder: str, model, keep_head=None, place=None):
  """HF ResNet folder -> (model, params, batch_stats)."""
  config, sd = read_folder(folder)
  _expect(config, folder, downsample_in_bottleneck=False, downsample_in_first_stage=False, hidden_act="relu",
          embedding_size=64)
  return common.load_flat(model, resnet_from_hf(sd), folder, image_size=64, keep_head=keep_head,
                          place=place)


# ---------------------------------------------------------------- ViT
def vit_from_hf(sd: dict[str, np.ndarray], num_heads: int) -> dict[str, np.ndarray]:
  """HF ViT state_dict -> flat Flax keys (the pooler, unused by classification, is dropped)."""
  out = {}
  kind = lambda leaf: "kernel" if leaf == "weight" else "bias"  # noqa: E731
  for name, v in sd.items():
    key = name.removeprefix("vit.")
    *parts, leaf = key.split(".")
    path = ".".join(parts)
    if key.startswith("pooler."):
      continue
    if key == "embeddings.cls_token":
      out["params/cls"] = v
    elif key == "embeddings.position_embeddings":
      out["params/pos_embedding"] = v
    elif path == "embeddings.patch_embeddings.projection":
      out[f"params/embedding/{kind(leaf)}"] = weights.conv_kernel(v) if leaf == "weight" else v
    elif path == "layernorm":
      out[f"params/Transformer/encoder_norm/{'scale' if leaf == 'weight' else 'bias'}"] = v
    elif path == "classifier":
      out[f"params/head/{kind(leaf)}"] = weights.linear_kernel(v) if leaf == "weight" else v
    elif m := re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", path):
      out.update(_block(f"params/Transformer/encoderblock_{m[1]}", m[2], leaf, v, num_heads, name))
    else:
      out[name] = v
  return out


def _block(pre, sub, leaf, v, heads, name):
  att = f"{pre}/MultiHeadDotProductAttention_0"
  kind = "kernel" if leaf == "weight" else "bias"
  if sub in ("layernorm_before", "layernorm_after"):
    ln = "LayerNorm_0" if sub == "layernorm_before" else "LayerNorm_1"
    return {f"{pre}/{ln}/{'scale' if leaf == 'weight' else 'bias'}": v}
  if m := re.fullmatch(r"attention\.attention\.(query|key|value)", sub):
    d = v.shape[0]
    return {f"{att}/{m[1]}/{kind}": v.T.reshape(-1, heads, d // heads) if leaf == "weight"
            else v.reshape(heads, d // heads)}
  if sub == "attention.output.dense":
    return {f"{att}/out/{kind}": v.T.reshape(heads, v.shape[1] // heads, v.shape[0]) if leaf == "weight" else v}
  if sub in ("intermediate.dense", "output.dense"):
    j = 0 if sub == "intermediate.dense" else 1
    return {f"{pre}/MlpBlock_0/Dense_{j}/{kind}": weights.linear_kernel(v) if leaf == "weight" else v}
  return {name: v}


def load_vit(folder: str, model, image_size=None, keep_head=None, place=None):
  """HF ViT folder -> (model, params, {}); LayerNorm epsilon taken from the config."""
  config, sd = read_folder(folder)
  _expect(config, folder, hidden_act="gelu", qkv_bias=True)
  model = model.clone(ln_eps=float(config.get("layer_norm_eps", 1e-12)))
  flat = vit_from_hf(sd, model.dims()[3])
  size = common.vit_image_size(model, flat.get("params/pos_embedding", np.zeros((1, 1, 1))).shape[1], image_size)
  flat = common.fit_posemb(flat, "params/pos_embedding", model, size)
  model, params, _ = common.load_flat(model, flat, folder, image_size=size, keep_head=keep_head,
                                      place=place)
  return model, params, {}
