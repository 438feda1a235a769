"""torchvision / timm state dicts <-> our ResNet and ViT trees (import and export).

Import renames every tensor to a flat 'params/...' or 'batch_stats/...' key; a tensor no rule knows
keeps its torch name, so `merge_strict` reports it as unexpected by that name. Export is the exact
inverse and gives a state_dict that torchvision's/timm's `load_state_dict(strict=True)` accepts.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from synth_jax.models import common, weights

# torch BatchNorm tensor -> our variable path (shared with the HF importer)
BN_NAMES = {"weight": "params/{}/scale", "bias": "params/{}/bias",
            "running_mean": "batch_stats/{}/mean", "running_var": "batch_stats/{}/var"}


def _resnet_module(parts: list[str]) -> str | None:
  """['layer1', '0', 'downsample', '1'] -> 'layer1_0/downsample_bn'; ['bn1'] -> 'bn1'."""
  if len(parts) == 1:
    return parts[0]
  if re.fullmatch(r"layer\d", parts[0]) and len(parts) >= 3:
    rest = parts[2:]
    if rest == ["downsample", "0"]:
      leaf = "downsample_conv"
    elif rest == ["downsample", "1"]:
      leaf = "downsample_bn"
    elif len(rest) == 1:
      leaf = rest[0]
    else:
      return None
    return f"{parts[0]}_{parts[1]}/{leaf}"
  return None


def resnet_from_torch(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """torchvision/timm ResNet state_dict -> flat Flax keys ('params/...', 'batch_stats/...')."""
  out = {}
  for name, v in sd.items():
    *parts, leaf = name.split(".")
    if leaf == "num_batches_tracked":
      continue
    if parts == ["fc"] and leaf in ("weight", "bias"):
      out[f"params/head/{'kernel' if leaf == 'weight' else 'bias'}"] = (
          weights.linear_kernel(v) if leaf == "weight" else v)
      continue
    mod = _resnet_module(parts)
    if mod is not None and mod.split("/")[-1].startswith(("conv", "downsample_conv")) and leaf == "weight":
      out[f"params/{mod}/kernel"] = weights.conv_kernel(v)
    elif mod is not None and mod.split("/")[-1].startswith(("bn", "downsample_bn")) and leaf in BN_NAMES:
      out[BN_NAMES[leaf].format(mod)] = v
    else:
      out[name] = v  # unknown: merge_strict names it
  return out


def _row(v, domain: int):
  """A per-domain (D, C) table -> row `domain`; plain tensors unchanged."""
  v = np.asarray(v, np.float32)
  return v[domain] if v.ndim == 2 else v


def resnet_to_torch(params: Mapping, batch_stats: Mapping, domain: int = 0) -> dict[str, np.ndarray]:
  """Our ResNet -> a torchvision state_dict (numpy); per-domain BN exports `domain`'s statistics."""
  out = {}
  flat = {**{f"params/{k}": v for k, v in weights.flatten(params).items()},
          **{f"batch_stats/{k}": v for k, v in weights.flatten(batch_stats).items()}}
  inv_bn = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
  for k, v in flat.items():
    _, *mod, leaf = k.split("/")
    if mod == ["head"]:
      out[f"fc.{'weight' if leaf == 'kernel' else 'bias'}"] = (
          np.asarray(v, np.float32).T if leaf == "kernel" else np.asarray(v, np.float32))
      continue
    if len(mod) == 2:
      layer, idx = mod[0].split("_")
      sub = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(mod[1], mod[1])
      tname = f"{layer}.{idx}.{sub}"
    else:
      tname = mod[0]
    if leaf == "kernel":
      out[f"{tname}.weight"] = np.transpose(np.asarray(v, np.float32), (3, 2, 0, 1))
    else:
      out[f"{tname}.{inv_bn[leaf]}"] = _row(v, domain)
      if leaf == "mean":
        out[f"{tname}.num_batches_tracked"] = np.array(0, np.int64)
  return out


def load_resnet(path: str, model, keep_head=None, image_size: int = 64, place=None):
  """Reads a torchvision/timm ResNet checkpoint into `model` -> (model, params, batch_stats)."""
  flat = resnet_from_torch(weights.read_tensors(path))
  return common.load_flat(model, flat, path, image_size=image_size, keep_head=keep_head,
                          place=place)


# ---------------------------------------------------------------- ViT (timm)
_VIT_PLAIN = {
    "cls_token": "params/cls", "pos_embed": "params/pos_embedding",
    "norm.weight": "params/Transformer/encoder_norm/scale", "norm.bias": "params/Transformer/encoder_norm/bias",
    "head.bias": "params/head/bias",
}


def vit_from_timm(sd: Mapping[str, np.ndarray], num_heads: int) -> dict[str, np.ndarray]:
  """timm VisionTransformer state_dict -> flat Flax keys."""
  out = {}
  for name, v in sd.items():
    v = np.asarray(v)
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if name in _VIT_PLAIN:
      out[_VIT_PLAIN[name]] = v
    elif name == "head.weight":
      out["params/head/kernel"] = weights.linear_kernel(v)
    elif name == "patch_embed.proj.weight":
      out["params/embedding/kernel"] = weights.conv_kernel(v)
    elif name == "patch_embed.proj.bias":
      out["params/embedding/bias"] = v
    elif m:
      out.update(_block_from_timm(f"params/Transformer/encoderblock_{m[1]}", m[2], v, num_heads, name))
    else:
      out[name] = v
  return out


def _block_from_timm(pre: str, rest: str, v: np.ndarray, heads: int, name: str) -> dict:
  ln = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_1"}
  mod, _, leaf = rest.rpartition(".")
  att = f"{pre}/MultiHeadDotProductAttention_0"
  if mod in ln:
    return {f"{pre}/{ln[mod]}/{'scale' if leaf == 'weight' else 'bias'}": v}
  if mod in ("mlp.fc1", "mlp.fc2"):
    dense = f"{pre}/MlpBlock_0/Dense_{0 if mod == 'mlp.fc1' else 1}"
    return {f"{dense}/{'kernel' if leaf == 'weight' else 'bias'}": weights.linear_kernel(v) if leaf == "weight" else v}
  if mod == "attn.qkv":
    d = v.shape[0] // 3
    out = {}
    for i, n in enumerate(("query", "key", "value")):
      part = v[i * d:(i + 1) * d]
      out[f"{att}/{n}/{'kernel' if leaf == 'weight' else 'bias'}"] = (
          part.T.reshape(-1, heads, d // heads) if leaf == "weight" else part.reshape(heads, d // heads))
    return out
  if mod == "attn.proj":
    if leaf == "weight":
      return {f"{att}/out/kernel": v.T.reshape(heads, v.shape[1] // heads, v.shape[0])}
    return {f"{att}/out/bias": v}
  return {name: v}


def vit_to_timm(params: Mapping, domain: int = 0) -> dict[str, np.ndarray]:
  """Our ViT params -> a timm VisionTransformer state_dict (class-token pooling)."""
  flat = {k: np.asarray(v, np.float32) for k, v in weights.flatten(params).items()}
  inv = {v.removeprefix("params/"): k for k, v in _VIT_PLAIN.items()}
  out = {}
  for k, v in flat.items():
    if k in inv:
      out[inv[k]] = _row(v, domain) if "encoder_norm" in k else v
    elif k == "head/kernel":
      out["head.weight"] = v.T
    elif k == "embedding/kernel":
      out["patch_embed.proj.weight"] = np.transpose(v, (3, 2, 0, 1))
    elif k == "embedding/bias":
      out["patch_embed.proj.bias"] = v
  blocks = sorted({int(m[1]) for k in flat if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
  for i in blocks:
    p, t = f"Transformer/encoderblock_{i}", f"blocks.{i}"
    for ours, theirs in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
      out[f"{t}.{theirs}.weight"] = _row(flat[f"{p}/{ours}/scale"], domain)
      out[f"{t}.{theirs}.bias"] = _row(flat[f"{p}/{ours}/bias"], domain)
    for j, theirs in ((0, "fc1"), (1, "fc2")):
      out[f"{t}.mlp.{theirs}.weight"] = flat[f"{p}/MlpBlock_0/Dense_{j}/kernel"].T
      out[f"{t}.mlp.{theirs}.bias"] = flat[f"{p}/MlpBlock_0/Dense_{j}/bias"]
    a = f"{p}/MultiHeadDotProductAttention_0"
    qkv = [flat[f"{a}/{n}/kernel"] for n in ("query", "key", "value")]
    out[f"{t}.attn.qkv.weight"] = np.concatenate([q.reshape(q.shape[0], -1).T for q in qkv], 0)
    out[f"{t}.attn.qkv.bias"] = np.concatenate([flat[f"{a}/{n}/bias"].reshape(-1) for n in ("query", "key", "value")])
    o = flat[f"{a}/out/kernel"]
    out[f"{t}.attn.proj.weight"] = o.reshape(-1, o.shape[-1]).T
    out[f"{t}.attn.proj.bias"] = flat[f"{a}/out/bias"]
  return out


def load_vit(path: str, model, image_size=None, keep_head=None, place=None):
  """Reads a timm ViT checkpoint into `model` -> (model, params, {})."""
  flat = vit_from_timm(weights.read_tensors(path), model.dims()[3])
  size = common.vit_image_size(model, flat.get("params/pos_embedding", np.zeros((1, 1, 1))).shape[1], image_size)
  flat = common.fit_posemb(flat, "params/pos_embedding", model, size)
  model, params, _ = common.load_flat(model, flat, path, image_size=size, keep_head=keep_head,
                                      place=place)
  return model, params, {}
