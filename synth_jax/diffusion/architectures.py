"""Component configs of a diffusers pipeline, from its folder or a built-in architecture name.

For `synth-jax plan`, which needs shapes, not weights. `sd15` is Stable Diffusion v1.5's published
architecture (the config.json files of runwayml/stable-diffusion-v1-5: UNet 320/640/1280/1280
with 8 heads and 768-wide cross-attention, VAE 128/256/512/512, CLIP ViT-L/14 text encoder);
`tiny` is `tiny.tiny_configs()`.
"""
from __future__ import annotations

import json
import os

from synth_jax.diffusion import tiny
from synth_jax.errors import ConfigError


def _sd15() -> dict:
  cfg = tiny.tiny_configs(sample_size=64, vocab_size=49408, eos_token_id=49407)
  cfg["unet"].update(
      down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
      up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
      block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=768,
      attention_head_dim=8, norm_num_groups=32)
  cfg["vae"].update(
      down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
      block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32,
      sample_size=512)
  cfg["text_encoder"].update(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, projection_dim=768)
  return cfg


BUILT_IN = {"sd15": _sd15, "tiny": tiny.tiny_configs}


def configs(model_path: str) -> dict:
  """{'unet', 'vae', 'text_encoder', 'scheduler'} config dicts; reads no weights."""
  if model_path in BUILT_IN:
    return BUILT_IN[model_path]()
  files = {"unet": "unet/config.json", "vae": "vae/config.json",
           "text_encoder": "text_encoder/config.json",
           "scheduler": "scheduler/scheduler_config.json"}
  if not model_path or not os.path.isfile(os.path.join(model_path, "model_index.json")):
    raise ConfigError(f"model_path={model_path!r} is neither a diffusers folder (model_index.json) "
                      f"nor a built-in architecture; pass a folder or one of {sorted(BUILT_IN)}")
  out = {}
  for name, rel in files.items():
    with open(os.path.join(model_path, rel)) as f:
      out[name] = json.load(f)
  return out
