"""Classification accuracy score (CAS) of a class-conditional generator on a small image dataset.

CAS (Ravuri & Vinyals 2019, here in its "real classifier" form): a classifier trained on the real
training images labels images generated for each class; CAS is the share labelled as the class
they were prompted with. A generator that ignores its conditioning scores ~1/classes, one that
draws recognisable instances of each class approaches the classifier's own test accuracy (also
reported, as the ceiling). The classifier is scikit-learn's RBF SVC on grayscale pixels scaled
to [0, 1] at the generated resolution: small, deterministic, ~98% on the digits test split.
"""
from __future__ import annotations

import numpy as np

from synth_jax import streams


def _features(images: np.ndarray) -> np.ndarray:
  """uint8 (N, H, W, 3) -> float (N, H*W) grayscale in [0, 1]."""
  return (np.asarray(images, np.float32).mean(-1) / 255.0).reshape(len(images), -1)


def fit_classifier(images: np.ndarray, labels: np.ndarray):
  from sklearn.svm import SVC
  return SVC(C=10.0, gamma="scale").fit(_features(images), labels)


def accuracy(classifier, images: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(classifier.predict(_features(images)) == np.asarray(labels)))


def split_arrays(dataset: str, split: str, resolution: int, data_dir: str | None = None):
  """(uint8 images (N, r, r, 3), labels, class names) of a dataset split, resized to r."""
  from synth_jax.data import sources
  s = sources.open_split(dataset, split, data_dir=data_dir)
  labels = np.asarray(s.labels(), np.int64)
  images = resized([s.source[i]["image"] for i in range(len(labels))], resolution)
  return images, labels, list(s.class_names)


def resized(images, resolution: int) -> np.ndarray:
  """Encoded images or uint8 arrays -> uint8 (N, r, r, 3), resized as the finetune trainer does."""
  from synth_jax.diffusion import invert_data
  return np.stack([np.round((invert_data.load_image(im, resolution, False) + 1) * 127.5).astype(np.uint8)
                   for im in images])


def generate_per_class(model_path: str, prompts: list[str], per_class: int, resolution: int,
                       steps: int = 20, guidance: float = 3.0, batch_size: int = 40,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`per_class` images of each prompt (class i = prompts[i]) with our sampler; (images, labels)."""
  from synth_jax import sharding
  from synth_jax.diffusion import loading
  from synth_jax.diffusion import sampler as sampler_lib
  mesh = sampler_lib.local_mesh(None)
  dp = sharding.data_parallel_size(mesh)
  batch_size = -(-batch_size // dp) * dp
  s = sampler_lib.Sampler(loading.load_pipeline(model_path), mesh, batch_size=batch_size,
                          num_steps=steps, height=resolution, width=resolution)
  labels = np.repeat(np.arange(len(prompts)), per_class)
  out = []
  for start in range(0, len(labels), batch_size):
    lab = labels[start:start + batch_size]
    pad = np.concatenate([lab, np.zeros(batch_size - len(lab), np.int64)])
    seeds = np.array([streams.int_seed(seed, "cas_sample", start + i) for i in range(batch_size)],
                     np.uint32)
    out.append(s([prompts[c] for c in pad], "", seeds, guidance)[:len(lab)])
  return np.concatenate(out), labels
