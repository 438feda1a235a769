"""Short dataset names -> tfds builder (or our manual builder) + standard train/eval splits.

  spec = registry.get("cars")                    # DatasetSpec
  train = registry.load("cars", "train", data_dir="~/tensorflow_datasets", manual_dir="~/cars")
  test = registry.load("cars", spec.eval_split, data_dir=..., manual_dir=...)

The nine downstream datasets of the bridged-transfer paper that facts.md names (aircraft,
caltech101, cars, dtd, dogs, flowers, food101, pets, sun397; the paper's tenth is NOT FOUND in
any source), plus cifar10, cifar100, imagenet and digits (scikit-learn's, written locally by
synth_jax.data.digits; no download) as extra names. Datasets tfds cannot fetch
(aircraft: no tfds builder; cars: tfds's `cars196` download is dead) use synth_jax.data.manual
with the user's downloaded files in `manual_dir`; pets has a manual builder too, used when
`manual_dir` is given. tfds datasets are prepared with file_format="array_record" (grain needs
random access); imagenet2012 needs its own manual_dir as tfds documents. Splits are the
conventional ones (train + validation for training where a validation split exists, as is usual
in transfer benchmarks): the paper's splits are NOT FOUND, so each split here is a default that
`--config` may override.
"""
from __future__ import annotations

import dataclasses
import difflib
import os

from synth_jax.data import manual, sources
from synth_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  tfds_name: str | None        # None: manual builder only
  train_split: str
  eval_split: str
  num_classes: int
  manual: bool = False         # has a manual builder (synth_jax.data.manual)
  note: str = ""
  # The splits the builder writes (from each tfds builder's _split_generators, read offline):
  # a split expression naming another one fails only after the download, so it is checked first.
  splits: tuple = ("train", "test")


_SPECS = [
    DatasetSpec("aircraft", None, "trainval", "test", 100, True, "FGVC-Aircraft variants",
                ("train", "validation", "trainval", "test")),
    DatasetSpec("caltech101", "caltech101", "train", "test", 102, False,
                "tfds: 30 train images per class; 102 = 101 + background"),
    DatasetSpec("cars", None, "train", "test", 196, True, "tfds cars196 download is dead"),
    DatasetSpec("dtd", "dtd", "train+validation", "test", 47, False, "split 1",
                ("train", "validation", "test")),
    DatasetSpec("dogs", "stanford_dogs", "train", "test", 120),
    DatasetSpec("flowers", "oxford_flowers102", "train+validation", "test", 102, False, "",
                ("train", "validation", "test")),
    DatasetSpec("food101", "food101", "train", "validation", 101, False, "",
                ("train", "validation")),
    DatasetSpec("pets", "oxford_iiit_pet", "train", "test", 37, True),
    # tfds' standard-partN configs write only train and test (Training_01.txt / Testing_01.txt);
    # "validation" exists only in the random "tfds" config.
    DatasetSpec("sun397", "sun397/standard-part1-120k", "train", "test", 397, False,
                "partition 1"),
    DatasetSpec("cifar10", "cifar10", "train", "test", 10, False, "extra"),
    DatasetSpec("cifar100", "cifar100", "train", "test", 100, False, "extra"),
    DatasetSpec("imagenet", "imagenet2012", "train", "validation", 1000, False,
                "extra; tfds needs the ILSVRC2012 tars in manual_dir",
                ("train", "validation", "test")),
    # Yu et al.'s out-of-domain evaluation sets (ImageNet-1k label space, test split only).
    DatasetSpec("imagenet_sketch", "imagenet_sketch", "test", "test", 1000, False,
                "eval only: ImageNet-Sketch", ("test",)),
    DatasetSpec("imagenet_r", "imagenet_r", "test", "test", 200, False,
                "eval only: ImageNet-Rendition, 200 of the 1k classes", ("test",)),
    DatasetSpec("digits", None, "train", "test", 10, False,
                "extra, for demos and tests: scikit-learn digits, written locally"),
]
REGISTRY = {s.name: s for s in _SPECS}


def get(name: str) -> DatasetSpec:
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, list(REGISTRY), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(REGISTRY)}"
    raise DataError(f"dataset {name!r} is not in the registry; {hint} (or pass a dataset "
                    "directory written by `synth-jax data import`)")
  return REGISTRY[name]


def check_split(name: str, split: str) -> None:
  """A split expression ("train", "train+validation", "train[:10%]") must name splits the
  builder writes; else a one-line DataError before anything is downloaded."""
  spec = get(name)
  for part in split.split("+"):
    base = part.split("[", 1)[0].strip()
    if base not in spec.splits:
      raise DataError(f"split {split!r} of {name!r} names {base!r}, which its builder "
                      f"({spec.tfds_name or 'manual'}) does not write; use one of {spec.splits}")


def prepare(name: str, data_dir: str, manual_dir: str | None = None) -> str | None:
  """Makes `name` readable with random access; returns the dataset dir for manual builds."""
  spec = get(name)
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  if name == "digits":
    from synth_jax.data import digits
    return digits.write_digits(data_dir)
  if spec.manual and (spec.tfds_name is None or manual_dir):
    if not manual_dir:
      raise DataError(f"dataset {name!r} must be built from manually downloaded files; pass "
                      f"manual_dir= the folder holding them (see synth_jax/data/manual.py)")
    return manual.prepare(name, manual_dir, data_dir)
  import tensorflow_datasets as tfds
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir)
                                          if manual_dir else None)
    try:
      builder.download_and_prepare(download_config=config)
    except Exception as e:  # network, checksum and manual-file errors come in many types
      raise DataError(f"tfds could not prepare {spec.tfds_name!r} ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); download its files by hand "
                      "and pass manual_dir=, or prepare it elsewhere and copy data_dir") from None
  return None


def load(name: str, split: str | None = None, data_dir: str = "~/tensorflow_datasets",
         manual_dir: str | None = None) -> sources.Split:
  """One split (default: the spec's train split) of a registered dataset, prepared if needed."""
  spec = get(name)
  split = split or spec.train_split
  check_split(name, split)
  dataset_dir = prepare(name, data_dir, manual_dir)
  if dataset_dir is not None:
    if split not in ("train", "test", "validation", "trainval") and "+" not in split:
      raise DataError(f"split {split!r} of {name!r} is unknown; use {spec.train_split!r} or "
                      f"{spec.eval_split!r}")
    return sources.open_split(dataset_dir, split)
  return sources.open_split(spec.tfds_name, split,
                            data_dir=os.path.abspath(os.path.expanduser(data_dir)))
