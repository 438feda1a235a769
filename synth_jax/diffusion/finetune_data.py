"""The real images and captions of a finetune run, batched by step.

Images are read, VAE-encoded once and cached exactly as `invert` does (`invert_data.load`:
`<workdir>/latents.npz`, latent mean and std per image and mirror view), so the latents each step
draws are a fresh sample of the VAE's posterior, as diffusers' script draws them. Captions are the
class prompts: `templates` filled with the class name, or every prompt of the class in a
`prompts.json` from the prompts stage. Step s's images, views, captions and caption dropout (the
empty prompt, for classifier-free guidance) all come from stream "finetune_batch" of (seed, s),
so a resumed run sees the same batches: the data iterator's state is the step.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from synth_jax import streams
from synth_jax.diffusion import invert_data
from synth_jax.errors import ConfigError, DataError


def class_prompts(config, class_names: list[str]) -> list[list[str]]:
  """Each class's caption list: from `config.prompts_path` (prompts.json) or the templates."""
  if config.prompts_path:
    path = os.path.expanduser(config.prompts_path)
    if not os.path.isfile(path):
      raise ConfigError(f"prompts_path={config.prompts_path!r} does not exist; pass the prompts "
                        "stage's prompts.json or '' for the templates")
    with open(path) as f:
      classes = json.load(f)["classes"]
    by_id = {int(c["id"]): [p["text"] for p in c["prompts"]] for c in classes}
    missing = [n for i, n in enumerate(class_names) if not by_id.get(i)]
    if missing:
      raise DataError(f"{path} has no prompts for class(es) {missing[:5]}; rerun the prompts "
                      "stage on this dataset's class names")
    return [by_id[i] for i in range(len(class_names))]
  templates = list(config.templates)
  bad = [t for t in templates if "{}" not in t]
  if not templates or bad:
    raise ConfigError(f"templates={templates!r}: each needs '{{}}' for the class name; e.g. "
                      "--config.templates=\"['a photo of a {}']\"")
  return [[t.format(n.replace("_", " ")) for t in templates] for n in class_names]


def tokenize(pipe, texts: list[str]) -> np.ndarray:
  return pipe.tokenizer(texts, padding="max_length", max_length=pipe.max_length, truncation=True,
                        return_tensors="np").input_ids.astype(np.int32)


@dataclasses.dataclass
class FinetuneData:
  mean: np.ndarray      # (N, views, h, w, c) float32 latent means (view 1 = mirrored)
  std: np.ndarray
  labels: np.ndarray    # (N,)
  class_names: list
  prompt_ids: np.ndarray  # (classes, max prompts, T): each class's captions, padded by repeats
  num_prompts: np.ndarray  # (classes,) how many of a class's rows are its own
  empty_ids: np.ndarray   # (T,) the empty caption

  def draw(self, seed: int, step: int, batch_size: int, caption_dropout: float):
    """(image, view, caption, dropped) of each example of step `step`, from (seed, step)."""
    rng = streams.rng(seed, "finetune_batch", step)
    idx = rng.integers(0, len(self.labels), batch_size)
    view = rng.integers(0, self.mean.shape[1], batch_size)
    caption = np.floor(rng.random(batch_size) * self.num_prompts[self.labels[idx]]).astype(int)
    dropped = rng.random(batch_size) < caption_dropout
    return idx, view, caption, dropped

  def batch(self, seed: int, step: int, batch_size: int, caption_dropout: float):
    """(caption ids (B, T), latent mean, latent std) of step `step`."""
    idx, view, caption, dropped = self.draw(seed, step, batch_size, caption_dropout)
    ids = self.prompt_ids[self.labels[idx], caption]
    ids = np.where(dropped[:, None], self.empty_ids[None], ids)
    return ids, self.mean[idx, view], self.std[idx, view]


def load(config, pipe, mesh, workdir: str) -> FinetuneData:
  """Latents (cached in workdir) and caption ids of the run's real images."""
  lat = invert_data.load(config, pipe, mesh, workdir)
  prompts = class_prompts(config, lat.class_names)
  width = max(len(p) for p in prompts)
  ids = np.stack([tokenize(pipe, [p[i % len(p)] for i in range(width)]) for p in prompts])
  return FinetuneData(lat.mean, lat.std, lat.labels, lat.class_names, ids,
                      np.array([len(p) for p in prompts]), tokenize(pipe, [""])[0])
