"""The real images of an inversion run: loaded once, VAE-encoded once (cached), batched by step.

Latent means and standard deviations of every image (and of its mirror image when `flip`) are
computed with the frozen VAE and cached in `<workdir>/latents.npz` (atomic), so a resumed run does
not re-encode. Step s's batch (which images, flipped or not, which prompt template) is drawn from
stream "invert_batch" of (seed, s) alone (synth_jax.streams).
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os

import jax
import numpy as np

from synth_jax import files, sharding, streams
from synth_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DSI_TEMPLATES = ("a photo in the style of {}", "an image in the style of {}",
                 "a picture in the style of {}", "a rendition in the style of {}",
                 "a cropped photo in the style of {}", "a close-up photo in the style of {}")
CLASS_TEMPLATES = ("a photo of a {}", "a rendition of a {}", "a cropped photo of a {}",
                   "a close-up photo of a {}", "a bright photo of a {}", "a good photo of a {}")


@dataclasses.dataclass
class InversionData:
  mean: np.ndarray        # (N, [2,] h, w, c) float32: latent means (index 1 = mirrored)
  std: np.ndarray
  labels: np.ndarray      # (N,) class of each image
  class_names: list
  per_class: bool

  def draw(self, seed: int, step: int, batch_size: int, num_templates: int):
    """(image index, view, template, token) of each example of step `step`, from (seed, step)."""
    rng = streams.rng(seed, "invert_batch", step)
    idx = rng.integers(0, len(self.labels), batch_size)
    flip = rng.integers(0, self.mean.shape[1], batch_size)
    tmpl = rng.integers(0, num_templates, batch_size)
    tok = self.labels[idx] if self.per_class else np.zeros(batch_size, np.int64)
    return idx, flip, tmpl, tok

  def batch(self, seed: int, step: int, batch_size: int, templates: np.ndarray):
    """(prompt ids, latent mean, latent std) of step `step`; `templates` from `prompt_ids`."""
    idx, flip, tmpl, tok = self.draw(seed, step, batch_size, templates.shape[1])
    return templates[tok, tmpl], self.mean[idx, flip], self.std[idx, flip]


def prompt_ids(pipe, config, tokens: list[str], tokenizer=None, max_length=None) -> np.ndarray:
  """(tokens, templates, max_length) token ids of every prompt template for every token
  (by `pipe.tokenizer` unless another tokenizer is given: SDXL's second)."""
  tokenizer, max_length = tokenizer or pipe.tokenizer, max_length or pipe.max_length
  templates = list(config.templates or (CLASS_TEMPLATES if config.per_class else DSI_TEMPLATES))
  for t in templates:
    if "{}" not in t:
      raise DataError(f"inversion template {t!r} has no '{{}}' for the token; e.g. "
                      "'a photo in the style of {}'")
  texts = [[t.format(tok) for t in templates] for tok in tokens]
  flat = [x for row in texts for x in row]
  ids = tokenizer(flat, padding="max_length", max_length=max_length, truncation=True,
                  return_tensors="np").input_ids.astype(np.int32)
  return ids.reshape(len(tokens), len(templates), -1)


def load_image(raw, resolution: int, center_crop: bool = True) -> np.ndarray:
  """Encoded bytes or an array -> float32 (r, r, 3) in [-1, 1].

  center_crop: resize the shorter side to r, then crop the center square (torchvision
  Resize(r) + CenterCrop(r)); otherwise resize the whole image to r x r, aspect not kept (what
  diffusers' textual_inversion.py does without --center_crop).
  """
  from PIL import Image
  im = Image.open(io.BytesIO(raw)) if isinstance(raw, (bytes, bytearray)) else Image.fromarray(
      np.asarray(raw))
  im = im.convert("RGB")
  if not center_crop:
    return np.asarray(im.resize((resolution, resolution), Image.BICUBIC), np.float32) / 127.5 - 1.0
  w, h = im.size
  scale = resolution / min(w, h)
  im = im.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                 Image.BICUBIC)
  w, h = im.size
  left, top = (w - resolution) // 2, (h - resolution) // 2
  im = im.crop((left, top, left + resolution, top + resolution))
  return np.asarray(im, np.float32) / 127.5 - 1.0


def read_images(config):
  from synth_jax.data import sources
  split = sources.open_split(config.dataset, config.split, data_dir=config.data_dir or None)
  labels = split.labels()
  idx = sources.few_shot_indices(labels, config.shots if int(config.shots) > 0 else None,
                                 int(config.seed))
  if config.max_images and len(idx) > int(config.max_images):
    rng = streams.rng(int(config.seed), "invert_images")
    idx = np.sort(rng.choice(idx, int(config.max_images), replace=False))
  if len(idx) == 0:
    raise DataError(f"dataset {config.dataset!r} split {config.split!r} has no images; check "
                    "--config.dataset and --config.split")
  images = []
  for i in idx:
    raw = split.source[int(i)]["image"]
    try:
      images.append(load_image(raw, int(config.resolution), bool(config.center_crop)))
    except Exception as e:  # PIL raises many types for a corrupt file
      raise DataError(f"image {int(i)} of {config.dataset!r} cannot be decoded "
                      f"({type(e).__name__}); remove it or re-import the dataset") from None
  return np.stack(images), labels[idx].astype(np.int64), list(split.class_names)


def _settings(config) -> str:
  """What the cached latents depend on besides the VAE, as one JSON string."""
  keys = ("dataset", "split", "shots", "max_images", "seed", "resolution", "center_crop", "flip")
  return json.dumps({k: config.get(k) for k in keys}, sort_keys=True)


def _per_class(config) -> bool:
  # finetune shares this loader; it has no per-class tokens and so no such key
  return bool(config.get("per_class", False))


def load(config, pipe, mesh, workdir: str) -> InversionData:
  cache = os.path.join(workdir, "latents.npz")
  if os.path.exists(cache):
    with np.load(cache, allow_pickle=False) as z:
      # a cache without settings predates the check: trusted as before
      if "settings" in z.files and str(z["settings"]) != _settings(config):
        raise ConfigError(f"{cache} was encoded with {str(z['settings'])}, not "
                          f"{_settings(config)}; use a new --config.workdir or delete it")
      return InversionData(z["mean"], z["std"], z["labels"], [str(n) for n in z["class_names"]],
                           _per_class(config))
  images, labels, names = read_images(config)
  views = [images, images[:, :, ::-1]] if config.flip else [images]
  encode = jax.jit(lambda p, x: pipe.vae.apply({"params": p}, x.astype(pipe.dtype),
                                               method=pipe.vae.encode))
  vae = jax.device_put(pipe.params["vae"], sharding.replicated(mesh))
  means, stds = [], []
  bs = max(1, int(config.encode_batch_size))
  for view in views:
    m_all, s_all = [], []
    for start in range(0, len(view), bs):
      m, logvar = encode(vae, view[start:start + bs])
      m_all.append(np.asarray(m, np.float32))
      s_all.append(np.exp(0.5 * np.asarray(logvar, np.float32)))
    means.append(np.concatenate(m_all))
    stds.append(np.concatenate(s_all))
  mean, std = np.stack(means, 1), np.stack(stds, 1)
  buf = io.BytesIO()
  np.savez(buf, mean=mean, std=std, labels=labels, class_names=np.array(names),
           settings=np.array(_settings(config)))
  files.write_bytes(cache, buf.getvalue())
  log.info("encoded %d real images (%d views) to latents %s", len(labels), len(views),
           mean.shape[2:])
  return InversionData(mean, std, labels, names, _per_class(config))
