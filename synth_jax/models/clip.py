"""CLIP (text + vision towers + projections) in Flax, loading Hugging Face and OpenCLIP weights.

    clip = load_clip("path/to/clip-vit-base-patch16")           # HF CLIPModel folder
    clip = load_clip("open_clip_model.safetensors", model_name="ViT-B-16")   # OpenCLIP checkpoint
    t = clip.embed_text(["a photo of a dog", "a photo of a cat"])  # (2, D) float32, L2-normalized
    v = clip.embed_images(uint8_nhwc)                                # (N, D) float32, L2-normalized
    logits = clip.logit_scale * v @ t.T                              # zero-shot logits

`logit_scale` is the multiplier itself (exp of the stored log-parameter, ~100 for trained
models), so the line above is CLIP's logits. Text goes through transformers' `CLIPTokenizer`
after the cleaning OpenAI/OpenCLIP's tokenizer applies (ftfy when installed, HTML unescaping),
padded to the context length. Images are resized (shortest edge, PIL bicubic), center-cropped and
normalized as `CLIPImageProcessorPil` does, on the host; the towers run jitted in fixed-size
batches (padded) so a run compiles at most a few shapes.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import html
import json
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax.errors import ConfigError, DataError, WeightsError
from synth_jax.models import clip_text, clip_vision, weights

log = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """CLIPImageProcessor settings: shortest-edge resize, center crop, mean/std."""
  resize: int = 224
  crop: int = 224
  mean: tuple[float, ...] = OPENAI_CLIP_MEAN
  std: tuple[float, ...] = OPENAI_CLIP_STD
  resample: int = 3  # PIL.Image.BICUBIC

  @classmethod
  def from_hf(cls, folder: str, image_size: int) -> "Preprocess":
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.exists(path):
      return cls(resize=image_size, crop=image_size)
    with open(path) as f:
      c = json.load(f)
    size, crop = c.get("size", image_size), c.get("crop_size", image_size)
    size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    crop = crop.get("height") if isinstance(crop, dict) else crop
    return cls(resize=int(size), crop=int(crop),
               mean=tuple(c.get("image_mean", OPENAI_CLIP_MEAN)),
               std=tuple(c.get("image_std", OPENAI_CLIP_STD)), resample=int(c.get("resample", 3)))

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """One uint8 HWC (or HW) image -> float32 (crop, crop, 3) normalized pixels."""
    from PIL import Image
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
      raise DataError(f"CLIP images must be uint8 pixels (0..255), got dtype {arr.dtype}")
    pil = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr).convert("RGB")
    w, h = pil.size
    short, long = min(w, h), max(w, h)
    new_long = int(self.resize * long / short)  # HF get_resize_output_image_size: floor
    size = (self.resize, new_long) if w <= h else (new_long, self.resize)
    if size != (w, h):
      pil = pil.resize(size, resample=self.resample)
    x = np.asarray(pil)
    top, left = (x.shape[0] - self.crop) // 2, (x.shape[1] - self.crop) // 2
    x = x[top:top + self.crop, left:left + self.crop].astype(np.float32) * np.float32(1 / 255)
    return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


def preprocess_images(preprocess: Preprocess, images, pool=None) -> np.ndarray:
  """Many images -> (N, crop, crop, 3); with a thread pool when given (PIL resize drops the GIL)."""
  if not len(images):
    return np.zeros((0, preprocess.crop, preprocess.crop, 3), np.float32)
  if pool is None or len(images) < 8:
    return np.stack([preprocess(im) for im in images])
  return np.stack(list(pool.map(preprocess, images)))


def clean_text(text: str) -> str:
  """The cleaning OpenAI's/OpenCLIP's SimpleTokenizer applies before BPE (ftfy + HTML unescape)."""
  try:
    import ftfy
    text = ftfy.fix_text(text)
  except ImportError:  # ftfy is optional: without it only mojibake repair differs
    pass
  text = html.unescape(html.unescape(text))
  return " ".join(text.split()).strip()


def tokenize(tokenizer, texts: Sequence[str], context_length: int = 77) -> np.ndarray:
  """Token ids (N, context_length) int32: <start> tokens <end>, truncated, padded."""
  if isinstance(texts, str):
    raise DataError(f"CLIP text input must be a list of strings, got the string {texts[:40]!r}; "
                    "wrap it in [...]")
  enc = tokenizer([clean_text(t) for t in texts], padding="max_length", truncation=True,
                  max_length=context_length)
  return np.asarray(enc["input_ids"], np.int32).reshape(len(texts), context_length)


def _bucket(n: int, batch_size: int) -> int:
  """Batch shape for n items: powers of two up to batch_size, so small calls compile small."""
  b = 1
  while b < min(n, batch_size):
    b *= 2
  return min(b, batch_size)


def normalize(x):
  """Unit-length embeddings in fp32 (CLIP's cosine similarity is their dot product)."""
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class CLIP:
  """A loaded CLIP: towers, params on device, tokenizer and image preprocessing."""

  def __init__(self, text_model: clip_text.CLIPTextModel, text_params,
               vision_model: clip_vision.CLIPVisionModel, vision_params, logit_scale: float,
               tokenizer, preprocess: Preprocess, batch_size: int = 64):
    self.text_model, self.vision_model = text_model, vision_model
    self.text_params = jax.device_put(text_params)
    self.vision_params = jax.device_put(vision_params)
    self.logit_scale = float(logit_scale)
    self.tokenizer, self.preprocess, self.batch_size = tokenizer, preprocess, batch_size
    self.context_length = text_model.max_position_embeddings
    self._pool = None
    self._text_fn = jax.jit(lambda p, ids: normalize(text_model.apply({"params": p}, ids)["text_embeds"]))
    self._image_fn = jax.jit(
        lambda p, x: normalize(vision_model.apply({"params": p}, x)["image_embeds"]))

  @property
  def embed_dim(self) -> int:
    return int(self.text_model.projection_dim)

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    return tokenize(self.tokenizer, texts, self.context_length)

  def _run(self, fn, params, x: np.ndarray) -> np.ndarray:
    n = len(x)
    out = np.zeros((n, self.embed_dim), np.float32)
    b = _bucket(n, self.batch_size)
    for start in range(0, n, b):
      chunk = x[start:start + b]
      pad = b - len(chunk)
      if pad:  # fixed shapes: pad with copies of row 0, dropped below
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)])
      out[start:start + b - pad] = np.asarray(fn(params, chunk))[:b - pad]
    return out

  def embed_text(self, texts: Sequence[str]) -> np.ndarray:
    """List of strings -> (N, D) float32 L2-normalized text embeddings."""
    if len(texts) == 0:
      return np.zeros((0, self.embed_dim), np.float32)
    return self._run(self._text_fn, self.text_params, self.tokenize(texts))

  def pixels(self, images) -> np.ndarray:
    """uint8 (N, H, W, 3) array or list of HWC arrays -> normalized (N, crop, crop, 3) float32."""
    if self._pool is None and len(images) >= 8:
      self._pool = concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1))
    return preprocess_images(self.preprocess, images, self._pool)

  def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
    """Already preprocessed NHWC float pixels -> (N, D) float32 L2-normalized image embeddings."""
    if len(pixels) == 0:
      return np.zeros((0, self.embed_dim), np.float32)
    return self._run(self._image_fn, self.vision_params, np.asarray(pixels, np.float32))

  def embed_images(self, images) -> np.ndarray:
    """uint8 (N, H, W, 3) (or list of HWC uint8) -> (N, D) float32 L2-normalized embeddings."""
    return self.embed_pixels(self.pixels(images))


def from_hf_state(config: Mapping[str, Any], state: Mapping[str, np.ndarray], tokenizer,
                  preprocess: Preprocess, source: str, dtype=jnp.float32,
                  batch_size: int = 64) -> CLIP:
  """A CLIP from an HF `CLIPConfig` dict and an HF `CLIPModel` state dict (numpy)."""
  config = dict(config)
  text_cfg = dict(config.get("text_config") or {})
  vision_cfg = dict(config.get("vision_config") or {})
  proj = config.get("projection_dim", 512)
  text_cfg["projection_dim"] = proj  # CLIPModel uses the top-level size; tower configs carry a default
  vision_cfg["projection_dim"] = proj
  text_model = clip_text.CLIPTextModel.from_config(text_cfg, dtype=dtype, with_projection=True)
  vision_model = clip_vision.CLIPVisionModel.from_config(vision_cfg, dtype=dtype, with_projection=True)
  text_state = {k: v for k, v in state.items() if k.startswith(("text_model.", "text_projection."))}
  vision_state = {k: v for k, v in state.items()
                  if k.startswith(("vision_model.", "visual_projection."))}
  other = sorted(set(state) - set(text_state) - set(vision_state) - {"logit_scale"})
  if other or "logit_scale" not in state:
    what = f"unexpected: {other[:8]}" if other else "missing: logit_scale"
    raise WeightsError(f"weights {source} are not a CLIPModel state dict ({what}); pass a full "
                       "CLIPModel checkpoint")
  text_params = clip_text.params_from_hf(text_state, text_model, source)
  vision_params = clip_vision.params_from_hf(vision_state, vision_model, source)
  if jnp.dtype(dtype) != jnp.float32:  # loaded as float32; cast once on the way to the device
    text_params, vision_params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype),
                                                        (text_params, vision_params))
  scale = float(np.exp(np.asarray(state["logit_scale"], np.float64)))
  return CLIP(text_model, text_params, vision_model, vision_params, scale, tokenizer, preprocess,
              batch_size)


def hf_tokenizer(folder: str):
  """transformers CLIPTokenizer from a folder (vocab.json + merges.txt or tokenizer.json)."""
  from transformers import CLIPTokenizer
  try:
    return CLIPTokenizer.from_pretrained(folder)
  except Exception as e:  # transformers raises OSError/ValueError/TypeError by case
    raise ConfigError(f"no CLIP tokenizer in {folder!r} ({type(e).__name__}); it needs vocab.json "
                      "+ merges.txt or tokenizer.json") from None


def load_hf(folder: str, dtype=jnp.float32, batch_size: int = 64, tokenizer: str | None = None) -> CLIP:
  """HF `CLIPModel` folder (config.json + model.safetensors / pytorch_model.bin + tokenizer)."""
  with open(os.path.join(folder, "config.json")) as f:
    config = json.load(f)
  if "text_config" not in config or "vision_config" not in config:
    raise ConfigError(f"{folder}/config.json is not a CLIPModel config (no text_config/"
                      "vision_config); pass a full CLIP folder, not a single tower")
  for name in ("model.safetensors", "pytorch_model.bin"):
    path = os.path.join(folder, name)
    if os.path.exists(path):
      break
  else:
    raise WeightsError(f"no model.safetensors or pytorch_model.bin in {folder!r}; save the "
                       "model with save_pretrained")
  preprocess = Preprocess.from_hf(folder, config["vision_config"].get("image_size", 224))
  return from_hf_state(config, weights.read_tensors(path), hf_tokenizer(tokenizer or folder),
                       preprocess, path, dtype, batch_size)


def load_clip(path: str, dtype=jnp.float32, *, model_name: str | None = None,
              model_config: Mapping[str, Any] | str | None = None, tokenizer: str | None = None,
              batch_size: int = 64) -> CLIP:
  """Loads CLIP from an HF `CLIPModel` folder or an OpenCLIP checkpoint.

  Args:
    path: HF folder (config.json), an OpenCLIP hub folder (open_clip_config.json), or an
      OpenCLIP checkpoint file (.safetensors/.bin/.pt/.pth) with `model_name` or `model_config`.
    dtype: compute and parameter dtype (float32 or bfloat16).
    model_name: OpenCLIP architecture name (e.g. "ViT-B-16"); needs open_clip installed.
    model_config: OpenCLIP model config dict or JSON path (instead of model_name).
    tokenizer: folder with a CLIP tokenizer; default the model folder, or for OpenCLIP files the
      BPE vocabulary open_clip ships.
    batch_size: largest batch one jitted call sees.
  """
  path = os.path.abspath(os.path.expanduser(path))
  dtype = jnp.dtype(dtype)  # accepts "float32" / "bfloat16" from configs
  if not os.path.exists(path):
    raise WeightsError(f"CLIP path {path!r} does not exist; pass an HF CLIP folder or an OpenCLIP checkpoint")
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
    return load_hf(path, dtype, batch_size, tokenizer)
  from synth_jax.models import clip_openclip
  return clip_openclip.load(path, dtype, model_name=model_name, model_config=model_config,
                            tokenizer=tokenizer, batch_size=batch_size)
