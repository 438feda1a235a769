"""How good is a synthetic set for a real task: CAS and a feature distance.

  ref = Reference.fit(real_train_images, real_train_labels, seed=0)   # uint8 (N, H, W, 3)
  cas = ref.accuracy(synthetic_images, synthetic_labels)              # Classification Accuracy Score
  fd = frechet(ref.features(synthetic_images), ref.features(real_test_images))

The reference classifier is trained on the real training split only: a one-hidden-layer MLP
(scikit-learn, deterministic from stream "reference_classifier") on images resized to `size` px;
its features are the hidden layer's ReLU activations. It is small on purpose (seconds on a CPU,
no pretrained weights): CAS (Ravuri & Vinyals 2019) asks whether a classifier of the real task
recognises the synthetic images as their class, and the Frechet distance (FID's formula, in this
classifier's feature space instead of Inception's) how far the two image distributions are apart.
Both are comparable between sets scored by the same reference, not across datasets.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from synth_jax import streams
from synth_jax.data import augment
from synth_jax.errors import DataError


def prepare(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, C) -> float32 (N, size*size*3) in [0, 1] (bilinear resize, gray -> RGB)."""
  from PIL import Image
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, -1)
  if images.shape[1:3] != (size, size):
    images = np.stack([np.asarray(Image.fromarray(im[..., :3]).resize((size, size), Image.BILINEAR))
                       for im in images])
  return images[..., :3].reshape(len(images), -1).astype(np.float32) / 255.0


@dataclasses.dataclass
class Reference:
  """A classifier of the real task (see the module docstring)."""
  mlp: object
  size: int

  @classmethod
  def fit(cls, images, labels, seed: int = 0, size: int = 16, hidden: int = 64,
          max_iter: int = 300) -> "Reference":
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    if len(images) == 0:
      raise DataError("the real training split is empty: no reference classifier for CAS")
    mlp = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=max_iter,
                        random_state=streams.int_seed(seed, "reference_classifier") % (2 ** 31))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ConvergenceWarning)
      mlp.fit(prepare(images, size), np.asarray(labels))
    return cls(mlp, size)

  def features(self, images) -> np.ndarray:
    x = prepare(images, self.size)
    return np.maximum(x @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0.0)

  def predict(self, images) -> np.ndarray:
    return self.mlp.predict(prepare(images, self.size))

  def accuracy(self, images, labels) -> float:
    """Share of `images` the reference labels as `labels` (CAS when the images are synthetic)."""
    return float(np.mean(self.predict(images) == np.asarray(labels)))


def frechet(a: np.ndarray, b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), as FID computes it."""
  from scipy import linalg
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 2 or len(b) < 2:
    raise DataError(f"a Frechet distance needs >= 2 images per side, got {len(a)} and {len(b)}")
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  import warnings
  with warnings.catch_warnings():  # dead ReLU units make S singular; handled below as FID does
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    covmean = linalg.sqrtm(s_a @ s_b)
  if not np.isfinite(covmean).all():  # near-singular product: FID's fix, a small ridge
    eps = np.eye(len(s_a)) * 1e-6
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", linalg.LinAlgWarning)
      covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
  covmean = np.real(covmean)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def read_split(split, max_images: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 (N, H, W, 3), labels) of a sources.Split, at most max_images (a seeded,
  class-balanced-in-expectation subset; 0 = all)."""
  n = len(split)
  idx = np.arange(n)
  if max_images and n > max_images:
    idx = np.sort(streams.rng(seed, "reference_classifier", 1).choice(n, max_images, replace=False))
  ims, labels = [], []
  for i in idx:
    r = split.source[int(i)]
    im = r["image"]
    if isinstance(im, (bytes, np.bytes_)) or (isinstance(im, np.ndarray) and im.dtype.kind == "S"):
      im = np.asarray(augment.decode(bytes(np.asarray(im).reshape(()).item() if isinstance(im, np.ndarray) else im)))
    im = np.asarray(im)
    ims.append(im if im.ndim == 3 else im[..., None])
    labels.append(int(r[split.label_key]))
  shapes = {im.shape for im in ims}
  if len(shapes) > 1:  # mixed sizes: resize all to the first one's side
    from PIL import Image
    side = ims[0].shape[0]
    ims = [np.asarray(Image.fromarray(im[..., :3] if im.shape[-1] >= 3 else im[..., 0]).convert("RGB")
                      .resize((side, side), Image.BILINEAR)) for im in ims]
  return np.stack(ims), np.asarray(labels, np.int64)
