"""Where the class names (and, for disambiguation, each class's real images) come from.

  source = open_classes(config)      # config.class_names | config.image_folder | config.dataset
  source.names                       # labels in id order
  source.images("tabby cat", k=16, seed=0) -> [uint8 HxWx3, ...]

Precedence for names: `class_names` (a text file, one per line, or "a,b,c", or a list), then
`image_folder` (root/<class>/*.jpg: its sub-folder names), then `dataset` (a registry name such as
"cars", a tfds name, or a dataset directory written by `synth-jax data import`). Images come from
`image_folder` or `dataset`, matched to a class by name.
"""
from __future__ import annotations

import difflib
import io
import os
from typing import Callable, Sequence

import numpy as np

from synth_jax import streams
from synth_jax.errors import ConfigError, DataError


class ClassSource:
  """Class names in id order, plus a way to read k real images of one class (or none)."""

  def __init__(self, names: Sequence[str], images_fn: Callable[[int, int, int], list] | None,
               image_names: Sequence[str] = (), where: str = "", dataset_name: str = ""):
    self.names = list(names)
    self.dataset_name = dataset_name  # tfds name of the image source ('' for folders/files)
    self._images_fn = images_fn
    self._image_ids = {n: i for i, n in enumerate(image_names)}
    self.where = where

  @property
  def has_images(self) -> bool:
    return self._images_fn is not None

  def images(self, name: str, k: int, seed: int) -> list[np.ndarray]:
    if self._images_fn is None:
      raise ConfigError("disambiguation needs real images: set --config.image_folder=ROOT or "
                        "--config.dataset=NAME_OR_DIR")
    if name not in self._image_ids:
      raise DataError(f"class {name!r} is not a class of the image source {self.where}; make "
                      "class_names match its class names")
    return self._images_fn(self._image_ids[name], k, seed)


def _decode(blob) -> np.ndarray:
  from PIL import Image
  if isinstance(blob, np.ndarray) and blob.dtype == np.uint8 and blob.ndim == 3:
    return blob
  if isinstance(blob, str):
    with Image.open(blob) as im:
      return np.asarray(im.convert("RGB"))
  return np.asarray(Image.open(io.BytesIO(bytes(blob))).convert("RGB"))


def _pick(members: np.ndarray, k: int, seed: int, class_id: int) -> np.ndarray:
  # The same choice as data.sources.few_shot_indices: depends on (seed, class, members) only.
  rng = streams.rng(seed, "few_shot", class_id)
  return members[rng.permutation(len(members))[:k]]


def _from_folder(root: str) -> ClassSource:
  from synth_jax.data import folder
  splits, names = folder.scan_folder(root)
  items = splits.get("train") or next(v for v in splits.values() if v)
  paths = np.array([p for p, _ in items], dtype=object)
  labels = np.array([y for _, y in items])

  def images(class_id, k, seed):
    return [_decode(p) for p in paths[_pick(np.flatnonzero(labels == class_id), k, seed, class_id)]]
  return ClassSource(names, images, names, where=root)


def _from_dataset(config) -> ClassSource:
  from synth_jax.data import registry, sources
  name = config.dataset
  data_dir = config.get("data_dir") or "~/tensorflow_datasets"
  if name in registry.REGISTRY:
    split = registry.load(name, config.get("split") or None, data_dir=data_dir,
                          manual_dir=config.get("manual_dir") or None)
  else:
    split = sources.open_split(name, config.get("split") or "train",
                               data_dir=os.path.expanduser(data_dir))

  def images(class_id, k, seed):
    idx = _pick(np.flatnonzero(split.labels() == class_id), k, seed, class_id)
    return [_decode(split.source[int(i)]["image"]) for i in sorted(idx)]
  return ClassSource(split.class_names, images, split.class_names, where=name,
                     dataset_name=split.name)


def _read_names(spec) -> list[str]:
  if isinstance(spec, str):
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
      with open(path) as f:
        return [ln.strip() for ln in f if ln.strip()]
    if os.sep in spec or spec.endswith((".txt", ".csv")):  # meant as a file, and it is not one
      raise ConfigError(f"class_names={spec!r}: no such file; pass a text file (one class per "
                        "line) or a comma-separated list")
    return [n.strip() for n in spec.split(",") if n.strip()]
  return [str(n) for n in spec]


def open_classes(config) -> ClassSource:
  """The ClassSource described by config (see the module docstring)."""
  image_src = None
  if config.get("image_folder"):
    image_src = _from_folder(os.path.expanduser(config.image_folder))
  elif config.get("dataset"):
    image_src = _from_dataset(config)
  if config.get("class_names"):
    names = _read_names(config.class_names)
    if len(set(names)) != len(names):
      dup = sorted({n for n in names if names.count(n) > 1})
      raise DataError(f"class_names has duplicates {dup[:5]}; each class must appear once")
    if image_src is None:
      return ClassSource(names, None, where="class_names")
    return ClassSource(names, image_src._images_fn, image_src.names, image_src.where,
                       image_src.dataset_name)
  if image_src is None:
    raise ConfigError("no classes: pass --config.class_names=FILE (one per line), "
                      "--config.image_folder=ROOT or --config.dataset=NAME_OR_DIR")
  return image_src


def subset(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
  """Ids of `wanted` among `names` (all when empty); an unknown name is a one-line error."""
  if not wanted:
    return list(range(len(names)))
  ids = {n: i for i, n in enumerate(names)}
  unknown = [w for w in wanted if w not in ids]
  if unknown:
    close = difflib.get_close_matches(unknown[0], list(ids), n=3)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else "check the spelling"
    raise ConfigError(f"unknown class name {unknown[0]!r} in config.classes; {hint}")
  return [ids[w] for w in wanted]
