"""Tiny random CLIPs saved in their own formats (transformers folder, OpenCLIP safetensors)."""
from __future__ import annotations

import json
import os

import numpy as np

from synth_jax.models import clip_openclip

IMAGE_SIZE = 32
TEXTS = ["a photo of a dog.", "a photo of a cat", "An AIRPLANE, flying!", "café crème 123",
         "", "a " * 100]


def _perturb(model, seed: int):
  """Adds noise to every parameter so LayerNorm affines and biases are not their 1/0 init."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("logit_scale"):
        p.fill_(float(np.log(50.0)))
      else:
        p.add_(0.05 * torch.randn(p.shape, generator=g))
  return model.eval()


def tokenizer_dir(path: str) -> str:
  """vocab.json + merges.txt built from open_clip's bundled BPE list."""
  return clip_openclip.write_tokenizer_files(path)


def hf_clip_folder(path: str, hidden_act: str = "quick_gelu", seed: int = 0):
  """Saves a tiny random transformers CLIPModel + tokenizer + PIL image processor; returns model."""
  import torch
  from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel
  torch.manual_seed(seed)
  config = CLIPConfig(
      text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act),
      vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8,
                         hidden_act=hidden_act),
      projection_dim=16)
  model = _perturb(CLIPModel(config), seed)
  model.save_pretrained(path, safe_serialization=True)
  tokenizer_dir(path)
  CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
  return model


OPENCLIP_CFG = {
    "embed_dim": 16, "quick_gelu": False,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "patch_size": 8,
                   "head_width": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


def openclip_checkpoint(folder: str, seed: int = 0):
  """Tiny random open_clip.CLIP saved as a safetensors state dict + its JSON config."""
  import open_clip
  import torch
  from safetensors.torch import save_file
  torch.manual_seed(seed)
  model = _perturb(open_clip.CLIP(OPENCLIP_CFG["embed_dim"], OPENCLIP_CFG["vision_cfg"],
                                  OPENCLIP_CFG["text_cfg"], quick_gelu=False), seed)
  os.makedirs(folder, exist_ok=True)
  weights = os.path.join(folder, "tiny_openclip.safetensors")
  save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
  config = os.path.join(folder, "tiny_openclip.json")
  with open(config, "w") as f:
    json.dump(OPENCLIP_CFG, f)
  return model, weights, config


def random_images(seed: int, shapes) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, size=(*s, 3), dtype=np.uint8) for s in shapes]


def openclip_max_diffs(clip, model, images, texts) -> tuple[float, float]:
  """(image, text) max abs differences of our normalised embeddings vs an open_clip model's."""
  import open_clip
  import torch
  pixels = clip.pixels(images)
  with torch.no_grad():
    ref_img = model.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), normalize=True)
    ref_txt = model.encode_text(open_clip.tokenize(texts), normalize=True)
  return (float(np.abs(clip.embed_images(images) - ref_img.numpy()).max()),
          float(np.abs(clip.embed_text(texts) - ref_txt.numpy()).max()))
