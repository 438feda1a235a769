"""A tiny real dataset for the demo and tests: scikit-learn's digits as a tfds dataset.

  dataset_dir = write_digits(data_dir)   # <data_dir>/digits/1.0.0, splits "train" and "test"
  split = sources.open_split(dataset_dir, "train")

1,797 8x8 grayscale digits (no download: they ship with scikit-learn), scaled to 0..255,
upscaled (bilinear) to `size` px and stored as RGB PNGs; class names "zero".."nine" so that text
prompts make sense. The train/test split is stratified and fixed by `seed`. Rerunning is a no-op
(shards are skipped when complete).
"""
from __future__ import annotations

import os

import numpy as np

from synth_jax import streams
from synth_jax.data import writer as writer_lib

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_arrays(size: int = 32, test_fraction: float = 0.2, seed: int = 0):
  """{"train": (images uint8[N,size,size,3], labels int64[N]), "test": (...)}."""
  from PIL import Image
  from sklearn.datasets import load_digits
  data = load_digits()
  images = np.clip(data.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
  images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                     for im in images])
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = data.target.astype(np.int64)
  test = np.zeros(len(labels), bool)
  for c in range(10):  # stratified: the same fraction of every class
    members = np.flatnonzero(labels == c)
    rng = streams.rng(seed, "digits_split", c)
    test[rng.permutation(members)[:int(round(len(members) * test_fraction))]] = True
  return {"train": (images[~test], labels[~test]), "test": (images[test], labels[test])}


def write_digits(data_dir: str, name: str = "digits", size: int = 32, test_fraction: float = 0.2,
                 seed: int = 0, num_shards: int = 2, encoding: str = "png") -> str:
  """Writes the digits dataset with DatasetWriter; returns its dataset directory."""
  w = writer_lib.DatasetWriter(data_dir, name, writer_lib.image_features(CLASS_NAMES, encoding),
                               description="scikit-learn digits, upscaled to RGB")
  if os.path.exists(os.path.join(w.dataset_dir, "dataset_info.json")):
    return w.dataset_dir
  for split, (images, labels) in digits_arrays(size, test_fraction, seed).items():
    for i, part in enumerate(np.array_split(np.arange(len(labels)), num_shards)):
      w.write_shard(split, i, num_shards,
                    ({"image": images[j], "label": int(labels[j])} for j in part))
  return w.finalize(["train", "test"])
