"""Reads the generate job's synthetic dataset with labels in a real dataset's label space.

  stream = open_synthetic(synthetic_dir, real_split.class_names)     # a pipeline.Stream, domain 1
  ds = pipeline.make_train_dataset([pipeline.Stream(real_split), stream], 256, seed, weights=[1, 1])

The synthetic dataset's ClassLabel names are matched to the real names (case-insensitive, '_' =
' '), so the two may list classes in different orders; a synthetic class with no real
counterpart is a DataError listing both sides. Real classes without synthetic images are allowed
(logged) unless `require_all=True`.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

from synth_jax.data import sources
from synth_jax.data.pipeline import Stream
from synth_jax.errors import DataError

log = logging.getLogger(__name__)


def open_synthetic(dataset: str, real_class_names: Sequence[str], split: str = "train",
                   rename: Mapping[str, str] | None = None, require_all: bool = False,
                   data_dir: str | None = None) -> Stream:
  """A Stream over the synthetic split whose labels index `real_class_names`.

  Args:
    dataset: the synthetic dataset directory (or tfds name under data_dir).
    real_class_names: the real dataset's class names (label order of the classifier).
    split: the synthetic split to read.
    rename: optional {synthetic name: real name} for names that differ (e.g. disambiguated).
    require_all: fail if some real class has no synthetic images.
  """
  syn = sources.open_split(dataset, split, data_dir=data_dir)
  names = [(rename or {}).get(n, n) for n in syn.class_names]
  mapping = sources.label_map(names, real_class_names, what=f"synthetic dataset {syn.name!r}")
  uncovered = sorted(set(range(len(real_class_names))) - set(mapping.tolist()))
  if uncovered:
    missing = [real_class_names[i] for i in uncovered]
    if require_all:
      raise DataError(f"synthetic dataset {syn.name!r} has no images for real classes "
                      f"{missing[:20]}; generate them, or allow it with require_all=False")
    log.warning("synthetic dataset %s has no images for %d real classes: %s", syn.name,
                len(missing), missing[:20])
  return Stream(syn, label_map=mapping, domain=1)
