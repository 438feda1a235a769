"""LoRA adapters fused into a loaded pipeline's weights: W <- W + scale * (alpha / r) * up @ down.

Two file formats, as diffusers' `load_lora_weights` reads them:
- diffusers / PEFT: `unet.<module>.lora_A.weight` (down) / `lora_B.weight` (up), also
  `text_encoder.` / `text_encoder_2.`; alpha / r from the `lora_adapter_metadata` header when
  present, else 1.
- kohya (sd-scripts): `lora_unet_<module with _>.lora_down.weight` / `lora_up.weight` / `.alpha`,
  text encoders `lora_te_` (`lora_te1_` / `lora_te2_` for SDXL); alpha / r (1 without alpha).
  SDXL files from sd-scripts name UNet layers as the original (SGM) UNet does
  (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `middle_block_0_in_layers_2`,
  `output_blocks_2_2_conv`); they are renamed to diffusers' layout first (`sgm_to_diffusers`, the
  mapping of diffusers' `_maybe_map_sgm_blocks_to_diffusers`).
Module names are diffusers' / transformers' (kohya joins them with '_'); a key that matches no
layer is an error that lists every such key, never a silent skip. Fused once at load, so sampling
costs nothing extra.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable

import numpy as np

from synth_jax.errors import ConfigError, WeightsError

_KOHYA = (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"),
          ("lora_te_", "text_encoder"))
_PEFT_SUFFIX = {".lora_A.weight": "down", ".lora_B.weight": "up"}
_KOHYA_SUFFIX = {".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}


def parse_specs(spec) -> list[tuple[str, float]]:
  """'a.safetensors:0.8,b.safetensors' (or a list of such) -> [(path, scale)]; scale default 1."""
  items = spec if isinstance(spec, (list, tuple)) else [s for s in str(spec or "").split(",")]
  out = []
  for item in (str(i).strip() for i in items):
    if not item:
      continue
    path, _, scale = item.rpartition(":")
    if not path:
      path, scale = scale, "1"
    try:
      out.append((os.path.expanduser(path), float(scale)))
    except ValueError:
      raise ConfigError(f"lora={item!r}: the scale after ':' must be a number, e.g. "
                        f"{path}:0.8") from None
  return out


def _read(path: str) -> tuple[dict, dict]:
  if not os.path.isfile(path):
    raise WeightsError(f"LoRA file {path!r} does not exist; check the path")
  from safetensors import safe_open
  with safe_open(path, framework="np") as f:
    meta = f.metadata() or {}
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  return tensors, meta


def _group(path: str, tensors: dict) -> dict[tuple[str, str], dict]:
  """{(component, module name as written): {'down', 'up'[, 'alpha']}} in either format."""
  groups: dict[tuple[str, str], dict] = {}
  for key, value in tensors.items():
    for suffixes in (_PEFT_SUFFIX, _KOHYA_SUFFIX):
      suffix = next((s for s in suffixes if key.endswith(s)), None)
      if suffix:
        break
    else:
      raise WeightsError(f"{path}: key {key!r} is not a LoRA tensor (lora_A/lora_B, "
                         "lora_down/lora_up or alpha); pass a diffusers/PEFT or kohya LoRA file")
    module = key[:-len(suffix)]
    if suffixes is _PEFT_SUFFIX:
      component, _, module = module.partition(".")
    else:
      prefix, component = next(((p, c) for p, c in _KOHYA if module.startswith(p)), ("", "?"))
      module = module[len(prefix):]
    groups.setdefault((component, module), {})[suffixes[suffix]] = np.asarray(value, np.float32)
  return groups


_SGM = re.compile(r"^(input_blocks|output_blocks)_(\d+)_(\d+)(?:_(.*))?$|^middle_block_(\d+)(?:_(.*))?$")
_SGM_TOP = {"time_embed_0": "time_embedding_linear_1", "time_embed_2": "time_embedding_linear_2",
            "label_emb_0_0": "add_embedding_linear_1", "label_emb_0_2": "add_embedding_linear_2",
            "input_blocks_0_0": "conv_in", "out_2": "conv_out"}
_SGM_RESNET = (("in_layers_2", "conv1"), ("out_layers_3", "conv2"), ("emb_layers_1", "time_emb_proj"),
               ("skip_connection", "conv_shortcut"))


def sgm_to_diffusers(module: str, layers_per_block: int) -> str:
  """A kohya SDXL UNet module name in the SGM layout -> diffusers' (both '_'-joined); other
  names are returned unchanged. input_blocks i > 0 hold (resnet, attention) pairs of down block
  (i - 1) // (layers_per_block + 1), the last index of each block its downsampler (`_0_op`);
  output_blocks i: (resnet, attention, upsampler) of up block i // (layers_per_block + 1)."""
  if module in _SGM_TOP:
    return _SGM_TOP[module]
  m = _SGM.match(module)
  if m is None:
    return module
  per = layers_per_block + 1
  if m.group(5) is not None:  # middle_block_{0,1,2}: resnet, attention, resnet
    inner = {"0": "resnets_0", "1": "attentions_0", "2": "resnets_1"}.get(m.group(5))
    if inner is None:
      return module
    head, rest = f"mid_block_{inner}", m.group(6) or ""
  else:
    kind, i, j, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4) or ""
    if kind == "input_blocks":
      block, layer = (i - 1) // per, (i - 1) % per
      if rest == "op":  # the downsampler's conv
        return f"down_blocks_{block}_downsamplers_0_conv"
      head = f"down_blocks_{block}_{('resnets', 'attentions')[min(j, 1)]}_{layer}"
    else:
      block, layer = i // per, i % per
      inner = ("resnets", "attentions", "upsamplers")[min(j, 2)]
      head = f"up_blocks_{block}_{inner}_{layer if j < 2 else 0}"
  if "resnets" in head:
    for old, new in _SGM_RESNET:
      rest = new if rest == old else rest
  return f"{head}_{rest}" if rest else head


def _alphas(meta: dict) -> dict:
  """PEFT's per-component lora_alpha / r from diffusers' safetensors header, if saved."""
  raw = meta.get("lora_adapter_metadata")
  if not raw:
    return {}
  data = json.loads(raw)
  out = {}
  for component in ("unet", "text_encoder", "text_encoder_2"):
    if f"{component}.r" in data:
      if data.get(f"{component}.rank_pattern") or data.get(f"{component}.alpha_pattern"):
        raise WeightsError("LoRA rank_pattern/alpha_pattern are not supported; use uniform ranks")
      out[component] = float(data[f"{component}.lora_alpha"]) / float(data[f"{component}.r"])
  return out


def _states(pipe) -> dict[str, dict[str, np.ndarray]]:
  """{component: PyTorch-layout state dict} of the pipeline's UNet and text encoders."""
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.models import clip_text
  out = {"unet": unet_lib.params_to_diffusers(pipe.params["unet"])}
  for name in ("text_encoder", "text_encoder_2"):
    if name in pipe.params:
      out[name] = clip_text.params_to_hf(pipe.params[name])
  return out


def fuse(pipe, path: str, scale: float = 1.0) -> list[str]:
  """Fuses the LoRA at `path` into `pipe.params` in place; returns the components it changed."""
  from synth_jax.diffusion import loading
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.models import clip_text
  tensors, meta = _read(path)
  groups = _group(path, tensors)
  alphas = _alphas(meta)
  states = _states(pipe)
  by_kohya = {c: {m[:-len(".weight")].replace(".", "_"): m[:-len(".weight")]
                  for m in s if m.endswith(".weight")} for c, s in states.items()}
  missing, misfit, changed = [], [], set()
  per_block = int(pipe.unet.config.layers_per_block)
  for (component, module), parts in sorted(groups.items()):
    state = states.get(component)
    if component == "unet":  # kohya SDXL files name the SGM UNet's layers
      module = sgm_to_diffusers(module, per_block)
    name = None
    # transformers 5 names CLIPTextModel's layers without the 'text_model.' of older files
    for candidate in (module, "text_model." + module):
      if state is not None and f"{candidate}.weight" in state:
        name = candidate
        break
      name = name or by_kohya.get(component, {}).get(candidate.replace(".", "_"))
    if name is None or "down" not in parts or "up" not in parts:
      missing.append(f"{component}.{module}")
      continue
    w = state[f"{name}.weight"]
    down, up = parts["down"], parts["up"]
    rank = down.shape[0]
    mult = (float(parts["alpha"].reshape(-1)[0]) / rank if "alpha" in parts
            else alphas.get(component, 1.0))
    delta = up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)
    if delta.size != w.size or up.shape[0] != w.shape[0]:
      misfit.append(f"{component}.{name}: LoRA {tuple(up.shape[:1]) + tuple(down.shape[1:])} vs "
                    f"layer {tuple(w.shape)}")
      continue
    state[f"{name}.weight"] = w + np.float32(scale * mult) * delta.reshape(w.shape)
    changed.add(component)
  if misfit or (missing and not changed):
    example = (misfit or missing)[:3]
    raise WeightsError(f"LoRA {path} is for another architecture than this pipeline "
                       f"({len(misfit) + len(missing)} of {len(groups)} layers do not fit, e.g. "
                       f"{'; '.join(example)}); use a LoRA trained for this base model")
  if missing:
    raise WeightsError(f"LoRA {path}: {len(missing)} key(s) match no layer of the pipeline: "
                       f"{', '.join(missing)}")
  dtype = pipe.dtype
  for component in changed:
    if component == "unet":
      params = unet_lib.params_from_diffusers(states[component], pipe.configs["unet"])
    else:
      module = pipe.text_encoder if component == "text_encoder" else pipe.text_encoder_2
      params = clip_text.params_from_hf(states[component], module)
    pipe.params[component] = loading.cast_params(params, dtype)
  return sorted(changed)


def fuse_all(pipe, specs: Iterable[tuple[str, float]]) -> None:
  for path, scale in specs:
    fuse(pipe, path, scale)
