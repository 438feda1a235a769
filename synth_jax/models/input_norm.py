"""The input normalisation a checkpoint was trained with: mean/std follow the weights.

  norm = input_norm.for_checkpoint(path, init_format, model_name)
  norm.mean, norm.std      # [0, 1] units, RGB; norm.source says where they came from

A model fine-tuned from ImageNet weights must see inputs normalised as in its pre-training
(issue 17, point 3): torchvision's and timm's ResNets use ImageNet's mean/std, while timm's
augreg ViTs, Hugging Face's google/vit-* and big_vision's ViTs map pixels to [-1, 1]
(mean = std = 0.5). The importer's folder says which when it can: timm's hub `config.json`
(`pretrained_cfg.mean/std`, or top-level `mean/std`), Hugging Face's `preprocessor_config.json`
(`image_mean/image_std`). Without such a file each format's convention applies.
"""
from __future__ import annotations

import dataclasses
import json
import os

from synth_jax.errors import WeightsError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclasses.dataclass(frozen=True)
class InputNorm:
  mean: tuple
  std: tuple
  source: str

  def to_dict(self) -> dict:
    return {"mean": list(self.mean), "std": list(self.std), "source": self.source}


def _folder(path: str) -> str:
  path = os.path.expanduser(path)
  return path if os.path.isdir(path) else os.path.dirname(path)


def _read_json(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise WeightsError(f"{path!r} is not valid JSON ({e}); re-download it or delete it") from None


def _triple(v, where: str) -> tuple:
  v = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3)]
  if len(v) != 3 or min(v) < 0:
    raise WeightsError(f"{where}: expected 3 RGB values, got {v}")
  return tuple(v)


def _from_timm(folder: str) -> InputNorm | None:
  cfg_path = os.path.join(folder, "config.json")
  cfg = _read_json(cfg_path)
  if not cfg:
    return None
  pre = cfg.get("pretrained_cfg") or cfg
  if "mean" in pre and "std" in pre:
    return InputNorm(_triple(pre["mean"], cfg_path), _triple(pre["std"], cfg_path), cfg_path)
  return None


def _from_hf(folder: str) -> InputNorm | None:
  pre_path = os.path.join(folder, "preprocessor_config.json")
  pre = _read_json(pre_path)
  if pre and "image_mean" in pre and "image_std" in pre:
    return InputNorm(_triple(pre["image_mean"], pre_path), _triple(pre["image_std"], pre_path),
                     pre_path)
  return None


def for_checkpoint(path: str, init_format: str, model_name: str) -> InputNorm:
  """The (mean, std) `path` was trained with (see the module docstring)."""
  vit = model_name.startswith("vit")
  if path in ("", "scratch"):
    return InputNorm(*IMAGENET, "random init: ImageNet statistics (ours)")
  folder = _folder(path)
  if init_format == "timm":
    found = _from_timm(folder)
    if found:
      return found
    return InputNorm(*(HALF if vit else IMAGENET),
                     f"timm {'ViT (augreg/original: 0.5)' if vit else 'ResNet (ImageNet)'} convention")
  if init_format == "hf":
    found = _from_hf(folder)
    if found:
      return found
    return InputNorm(*(HALF if vit else IMAGENET),
                     f"Hugging Face {'google/vit (0.5)' if vit else 'microsoft/resnet (ImageNet)'} convention")
  if init_format == "big_vision":
    return InputNorm(*HALF, "big_vision ViT: value_range(-1, 1)")
  return InputNorm(*IMAGENET, "torchvision ImageNet weights")
