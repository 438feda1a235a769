"""Random-access sources for grain: one split of a tfds dataset, labels, few-shot subsets.

  split = open_split("/path/to/<name>/<version>", "train")        # a dataset directory
  split = open_split("cars", "train", data_dir="~/tensorflow_datasets")  # a tfds name
  split.source[i] -> {"image": encoded bytes, "label": int, ...}  (images decoded later, by us,
                                                                  so corrupt ones can be skipped)
  split.class_names, len(split), split.labels() -> int64[N]
  idx = few_shot_indices(split.labels(), k=16, seed=0)             # sorted global indices

Few-shot selection depends only on (labels, k, seed): every host and every rerun picks the same
images, and the choice for class c does not change when other classes are added.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import numpy as np

from synth_jax import streams
from synth_jax.errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Split:
  """One split: a random-access `source`, its class names and where it came from."""
  source: Any
  class_names: list[str]
  name: str
  split: str
  label_key: str = "label"
  _labels: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.source)

  def labels(self) -> np.ndarray:
    """All labels (int64[N]); read once (a pass over the records, no image decoding)."""
    if self._labels is None:
      from synth_jax import runs
      out = np.empty(len(self.source), np.int64)
      step = 1024
      for start in runs.progress(range(0, len(out), step), desc=f"labels {self.name}:{self.split}",
                                 unit="chunk"):
        idx = list(range(start, min(start + step, len(out))))
        records = (self.source.__getitems__(idx) if hasattr(self.source, "__getitems__")
                   else [self.source[i] for i in idx])
        out[start:start + len(idx)] = [int(r[self.label_key]) for r in records]
      self._labels = out
    return self._labels


def _is_dataset_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "dataset_info.json"))


def find_dataset_dir(path: str) -> str | None:
  """`path` itself, or the single newest `<path>/<version>/` that holds dataset_info.json."""
  if _is_dataset_dir(path):
    return path
  if os.path.isdir(path):
    versions = sorted(d for d in os.listdir(path) if _is_dataset_dir(os.path.join(path, d)))
    if versions:
      return os.path.join(path, versions[-1])
  return None


# Up to this many bytes of shards are hashed on open; above it only sizes are compared (hashing
# an ImageNet-sized set at every train start would cost minutes). Writers hash everything.
_HASH_BYTES = 1 << 30


def _verify_shards(directory: str, name: str, splits: Sequence[str]) -> None:
  """Names a truncated or altered shard of `splits` (from the writer's manifest.json) on open."""
  from synth_jax import files
  manifest = files.read_manifest(directory)
  shards = sorted(f for f in manifest
                  if any(f.startswith(f"{name}-{s}.array_record-") for s in splits))
  check_hash = sum(manifest[f]["size"] for f in shards) <= _HASH_BYTES
  for f in shards:
    files.verify_file(directory, f, check_hash=check_hash)


def open_split(dataset: str, split: str, data_dir: str | None = None,
               decode_images: bool = False) -> Split:
  """Opens one split of a dataset directory or a tfds name (see the module docstring)."""
  import tensorflow_datasets as tfds
  path = os.path.abspath(os.path.expanduser(dataset))
  found = find_dataset_dir(path) if (os.sep in dataset or os.path.isdir(path)) else None
  decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
  if found:
    builder = tfds.builder_from_directory(found)
  else:
    try:
      builder = tfds.builder(dataset, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for an unknown name
      raise DataError(f"dataset {dataset!r} is neither a dataset directory (with "
                      f"dataset_info.json) nor a tfds name under data_dir={data_dir!r} "
                      f"({type(e).__name__}); pass the directory the import/generate stage "
                      "wrote, or a prepared tfds name") from None
  simple = [s.split("[")[0] for s in split.split("+")]  # "train+validation", "train[:10%]"
  known = builder.info.splits  # (empty under tfds.testing.mock_data: let tfds decide)
  if known and any(s not in known for s in simple):
    raise DataError(f"split {split!r} not in {builder.info.full_name} (has "
                    f"{sorted(builder.info.splits)}); pass one of those")
  if found:
    _verify_shards(found, builder.info.name, simple)
  if "image" not in builder.info.features:
    decoders = None
  try:
    source = builder.as_data_source(split, decoders=decoders)
  except Exception as e:
    raise DataError(f"cannot open {builder.info.full_name} split {split!r} as a random-access "
                    f"source ({e}); prepare it with file_format='array_record'") from None
  names = list(builder.info.features["label"].names)
  return Split(source=source, class_names=names, name=builder.info.name, split=split)


def few_shot_indices(labels: np.ndarray, k: int | str | None, seed: int,
                     num_classes: int | None = None, stream: str = "few_shot") -> np.ndarray:
  """Sorted indices of k examples per class, chosen by seed; k in (None, "all", -1) = all.

  Class c's choice is a permutation drawn from `streams.rng(seed, stream, c)`, so it depends only on
  the seed, the class and which indices hold class c. Classes with fewer than k examples keep all
  of theirs (with a warning naming them).
  """
  labels = np.asarray(labels)
  if k is None or k == "all" or (isinstance(k, (int, np.integer)) and k < 0):
    return np.arange(len(labels))
  k = int(k)
  if k == 0:
    raise DataError("few-shot k=0 selects nothing; pass k >= 1, or 'all' for the full set")
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  chosen, short = [], []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    if len(members) < k:
      short.append(c)
    rng = streams.rng(seed, stream, c)
    chosen.append(members[rng.permutation(len(members))[:k]])
  if short:
    log.warning("few-shot k=%d: classes %s have fewer examples; all of theirs are used", k,
                short[:20])
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros((0,), np.int64)


def label_map(from_names: Sequence[str], to_names: Sequence[str], what: str = "synthetic",
              normalize: bool = True) -> np.ndarray:
  """Array m with m[i] = index in `to_names` of `from_names[i]`; mismatch -> DataError.

  Names are compared case-insensitively with '_' and spaces equated (tfds uses both styles).
  """
  def key(n: str) -> str:
    return " ".join(n.replace("_", " ").lower().split()) if normalize else n

  target = {key(n): i for i, n in enumerate(to_names)}
  missing = [n for n in from_names if key(n) not in target]
  if missing:
    extra = sorted(set(target) - {key(n) for n in from_names})
    raise DataError(f"{what} classes {missing[:20]} are not in the real dataset's classes "
                    f"(real classes not covered: {extra[:20]}); generate with the real "
                    "dataset's class names or pass a class-name mapping")
  return np.array([target[key(n)] for n in from_names], np.int64)
