"""OpenCLIP checkpoints -> our Flax CLIP, by renaming to the Hugging Face `CLIPModel` layout.

The standard OpenCLIP `CLIP` (ViT image tower, built-in text transformer) is the HF model with
other names: fused `in_proj` q/k/v, `c_fc`/`c_proj` MLPs, `proj` matrices applied as `x @ proj`.
Variants that change the math (layer scale, attentional pooling, timm/HF towers, EOS/last
pooling, ...) are refused with the option's name rather than loaded wrong.

`write_tokenizer_files(out_dir)` turns the BPE list open_clip ships (`bpe_simple_vocab_16e6.txt.gz`)
into transformers' `vocab.json` + `merges.txt`, so OpenCLIP models tokenize with `CLIPTokenizer`.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from typing import Any, Mapping

import numpy as np

from synth_jax import files
from synth_jax.errors import ConfigError, WeightsError
from synth_jax.models import weights

# OpenCLIP config keys we load; any other key set to a non-default value is refused.
_TEXT_DEFAULTS = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False,
                  "final_ln_after_pool": False, "pool_type": "argmax", "proj_bias": False,
                  "proj_type": "linear", "hf_model_name": None, "qk_norm": False,
                  "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
                  "scale_attn": False, "scale_fc": False, "act_kwargs": None, "norm_kwargs": None}
_VISION_DEFAULTS = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
                    "pos_embed_type": "learnable", "final_ln_after_pool": False, "pool_type": "tok",
                    "timm_model_name": None, "qk_norm": False, "scaled_cosine_attn": False,
                    "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                    "scale_fc": False, "act_kwargs": None, "norm_kwargs": None}


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP byte -> printable unicode table (the order defines the first 256 ids)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
      list(range(ord("®"), ord("ÿ") + 1))
  cs, n = bs[:], 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def default_bpe_path() -> str:
  try:
    import open_clip
  except ImportError:
    raise ConfigError("OpenCLIP models need a tokenizer: pass tokenizer=FOLDER (vocab.json + "
                      "merges.txt) or install open_clip_torch for its BPE vocabulary") from None
  return os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")


def write_tokenizer_files(out_dir: str, bpe_path: str | None = None) -> str:
  """CLIP's BPE merge list (.txt.gz) -> vocab.json + merges.txt for CLIPTokenizer; returns out_dir."""
  bpe_path = bpe_path or default_bpe_path()
  with gzip.open(bpe_path) as f:
    lines = f.read().decode("utf-8").split("\n")
  merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]  # the count CLIP uses
  vocab = list(bytes_to_unicode().values())
  vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
  vocab += ["<|startoftext|>", "<|endoftext|>"]
  os.makedirs(out_dir, exist_ok=True)
  files.write_json(os.path.join(out_dir, "vocab.json"), {t: i for i, t in enumerate(vocab)})
  files.write_text(os.path.join(out_dir, "merges.txt"),
                "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
  return out_dir


def _check_options(cfg: Mapping[str, Any], defaults: Mapping[str, Any], tower: str):
  bad = [f"{k}={cfg[k]!r}" for k, d in defaults.items() if k in cfg and cfg[k] != d
         and not (k.endswith("_kwargs") and not cfg[k])]
  if bad:
    raise ConfigError(f"OpenCLIP {tower} options {bad} are not supported by synth_jax's CLIP; "
                      "use a standard ViT CLIP (e.g. ViT-B-16) or the HF CLIPModel export")


def hf_config(model_cfg: Mapping[str, Any]) -> dict:
  """OpenCLIP model config (embed_dim, vision_cfg, text_cfg, quick_gelu) -> HF CLIPConfig dict."""
  if "model_cfg" in model_cfg:  # open_clip_config.json from the hub wraps it
    model_cfg = model_cfg["model_cfg"]
  v, t = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
  _check_options(v, _VISION_DEFAULTS, "vision")
  _check_options(t, _TEXT_DEFAULTS, "text")
  if not isinstance(v.get("layers", 12), int) or isinstance(v.get("image_size", 224), (list, tuple)):
    raise ConfigError(f"OpenCLIP vision_cfg {v} is a ResNet or non-square tower; only square ViT "
                      "towers are supported")
  act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
  vw, tw = v.get("width", 768), t.get("width", 512)
  return {
      "projection_dim": model_cfg["embed_dim"],
      "vision_config": {
          "hidden_size": vw, "num_hidden_layers": v.get("layers", 12),
          "num_attention_heads": vw // v.get("head_width", 64),
          "intermediate_size": int(vw * v.get("mlp_ratio", 4.0)), "patch_size": v.get("patch_size", 16),
          "image_size": v.get("image_size", 224), "hidden_act": act, "layer_norm_eps": 1e-5},
      "text_config": {
          "hidden_size": tw, "num_hidden_layers": t.get("layers", 12),
          "num_attention_heads": t.get("heads", 8), "intermediate_size": int(tw * t.get("mlp_ratio", 4.0)),
          "vocab_size": t.get("vocab_size", 49408), "max_position_embeddings": t.get("context_length", 77),
          # eos id 2 makes the text tower pool at argmax(ids), OpenCLIP's 'argmax' pooling.
          "eos_token_id": 2, "hidden_act": act, "layer_norm_eps": 1e-5},
  }


def _block(prefix: str, key: str, v: np.ndarray, out: dict):
  """One resblock tensor -> HF encoder layer tensors."""
  m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key)
  layer, rest = m.group(1), m.group(2)
  base = f"{prefix}.encoder.layers.{layer}."
  if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
    leaf = rest.rsplit("_", 1)[-1]
    for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(v, 3, axis=0)):
      out[f"{base}self_attn.{name}.{leaf}"] = part
    return
  renames = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "attn.out_proj.": "self_attn.out_proj.",
             "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
  for src, dst in renames.items():
    if rest.startswith(src):
      out[base + dst + rest[len(src):]] = v
      return
  out[key] = v  # unknown: left for merge_strict to report


def hf_state(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """OpenCLIP `CLIP` state dict -> HF `CLIPModel` state dict (numpy)."""
  out = {}
  top = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
         "positional_embedding": "text_model.embeddings.position_embedding.weight",
         "ln_final.weight": "text_model.final_layer_norm.weight",
         "ln_final.bias": "text_model.final_layer_norm.bias", "logit_scale": "logit_scale",
         "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
         "visual.class_embedding": "vision_model.embeddings.class_embedding",
         "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
         "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
         "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
         "visual.ln_post.weight": "vision_model.post_layernorm.weight",
         "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
  for key, v in state.items():
    v = np.asarray(v)
    if key == "attn_mask" or key.endswith(".attn_mask"):
      continue  # the causal-mask buffer, not a weight
    if key == "text_projection":
      out["text_projection.weight"] = v.T  # OpenCLIP applies x @ proj; HF Linear x @ W.T
    elif key == "visual.proj":
      out["visual_projection.weight"] = v.T
    elif key in top:
      out[top[key]] = v
    elif key.startswith("visual.transformer."):
      _block("vision_model", key[len("visual."):], v, out)
    elif key.startswith("transformer."):
      _block("text_model", key, v, out)
    else:
      out[key] = v  # unexpected (layer scale, attn pool, logit_bias...): merge_strict names it
  return out


def _model_config(path: str, model_name, model_config) -> dict:
  if isinstance(model_config, Mapping):
    return dict(model_config)
  if isinstance(model_config, str):
    with open(model_config) as f:
      return json.load(f)
  hub_cfg = os.path.join(path, "open_clip_config.json") if os.path.isdir(path) else None
  if hub_cfg and os.path.exists(hub_cfg):
    with open(hub_cfg) as f:
      return json.load(f)
  if model_name:
    try:
      import open_clip
    except ImportError:
      raise ConfigError(f"model_name={model_name!r} needs open_clip_torch installed; or pass "
                        "model_config (the model's JSON config)") from None
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
      raise ConfigError(f"open_clip has no model config {model_name!r}; pass one of "
                        f"open_clip.list_models() or model_config")
    return cfg
  raise ConfigError(f"OpenCLIP checkpoint {path!r} needs model_name (e.g. 'ViT-B-16') or "
                    "model_config: the file alone does not say the heads or activation")


def _weights_file(path: str) -> str:
  if os.path.isfile(path):
    return path
  for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
    if os.path.exists(os.path.join(path, name)):
      return os.path.join(path, name)
  raise WeightsError(f"{path!r} holds no config.json (HF) nor open_clip_model.safetensors / "
                     "open_clip_pytorch_model.bin (OpenCLIP); pass a CLIP folder or checkpoint file")


def load(path: str, dtype, *, model_name=None, model_config=None, tokenizer=None, batch_size=64):
  """OpenCLIP checkpoint (file or hub folder) -> `clip.CLIP`. See `clip.load_clip`."""
  from synth_jax.models import clip as clip_lib
  cfg = _model_config(path, model_name, model_config)
  config = hf_config(cfg)
  pre = dict(cfg.get("preprocess_cfg") or {})
  size = config["vision_config"]["image_size"]
  if pre.get("resize_mode", "shortest") != "shortest":
    raise ConfigError(f"OpenCLIP resize_mode {pre['resize_mode']!r} is not supported; only 'shortest'")
  preprocess = clip_lib.Preprocess(resize=size, crop=size,
                                   mean=tuple(pre.get("mean", clip_lib.OPENAI_CLIP_MEAN)),
                                   std=tuple(pre.get("std", clip_lib.OPENAI_CLIP_STD)))
  if tokenizer is None and os.path.isdir(path) and os.path.exists(os.path.join(path, "vocab.json")):
    tokenizer = path
  if tokenizer is None:
    tokenizer = os.path.join(tempfile.gettempdir(), f"synth_jax_clip_bpe_{os.getuid()}")
    if not os.path.exists(os.path.join(tokenizer, "merges.txt")):
      write_tokenizer_files(tokenizer)
  file = _weights_file(path)
  state = hf_state(weights.read_tensors(file))
  return clip_lib.from_hf_state(config, state, clip_lib.hf_tokenizer(tokenizer), preprocess, file,
                                dtype, batch_size)
