"""config.data -> the real/synthetic splits and the grain iterators each stage trains on.

  config.data.real         dataset directory, or a registry name ("digits", "cars", ...)
  config.data.data_dir     tfds data dir (registry names are prepared there)
  config.data.train_split / eval_split   "" = the registry's (or "train"/"test")
  config.data.synthetic    the generate stage's dataset directory ("" = none)
  config.data.shots        k real images per class (-1 = all): few-shot by (seed, class)
  config.data.volume       synthetic images per class (-1 = all): data-volume sweeps
  config.data.resolution, augment (AugmentConfig fields), workers, threads, prefetch
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from synth_jax.data import pipeline, registry, sources, synthetic
from synth_jax.errors import ConfigError


@dataclasses.dataclass
class Data:
  """The opened splits: real train (few-shot subset applied), real eval, synthetic (or None)."""
  real: pipeline.Stream
  eval: sources.Split
  synthetic: pipeline.Stream | None
  class_names: list[str]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def size(self, source: str) -> int:
    """Examples per epoch of a stage's source (for *_epochs durations)."""
    n_real = len(self.real.indices)
    n_syn = len(self.synthetic.indices) if self.synthetic is not None else 0
    return {"real": n_real, "synthetic": n_syn, "mix": n_real + n_syn, "paired": n_real}[source]


def _open(data_cfg, split: str, default_kind: str) -> sources.Split:
  name = str(data_cfg.real)
  if not name:
    raise ConfigError("config.data.real is empty; pass a dataset directory or a registry name like 'digits'")
  data_dir = str(data_cfg.get("data_dir", "") or "~/tensorflow_datasets")
  path = os.path.abspath(os.path.expanduser(name))
  if os.sep in name or os.path.isdir(path):
    return sources.open_split(path, split or ("train" if default_kind == "train" else "test"))
  spec = registry.get(name)
  split = split or (spec.train_split if default_kind == "train" else spec.eval_split)
  return registry.load(name, split, data_dir=data_dir, manual_dir=data_cfg.get("manual_dir") or None)


def seed_for(seed: int, *parts: int) -> int:
  """A 31-bit seed from (config.seed, stage, ...): independent streams that resume identically."""
  return int(np.random.SeedSequence([int(seed), *parts]).generate_state(1)[0] & 0x7FFFFFFF)


def open_data(config, needs_synthetic: bool) -> Data:
  d = config.data
  real = _open(d, str(d.get("train_split", "") or ""), "train")
  ev = _open(d, str(d.get("eval_split", "") or ""), "eval")
  shots = int(d.get("shots", -1))
  indices = sources.few_shot_indices(real.labels(), shots if shots > 0 else None, int(config.seed),
                                     num_classes=len(real.class_names))
  syn = None
  if needs_synthetic:
    if not d.get("synthetic"):
      raise ConfigError(f"method {config.method!r} needs synthetic images; set "
                        "--config.data.synthetic=DIR (the generate stage's dataset)")
    syn = synthetic.open_synthetic(str(d.synthetic), real.class_names)
    volume = int(d.get("volume", -1))
    syn.indices = sources.few_shot_indices(syn.split.labels(), volume if volume > 0 else None,
                                           int(config.seed), num_classes=len(syn.split.class_names))
  return Data(pipeline.Stream(real, indices=indices), ev, syn, list(real.class_names))


def _kw(config) -> dict[str, Any]:
  d = config.data
  return dict(augment=dict(d.get("augment", {}) or {}), resolution=int(d.resolution),
              workers=int(d.get("workers", 0)), threads=int(d.get("threads", 8)),
              prefetch=int(d.get("prefetch", 64)))


def train_dataset(config, data: Data, source: str, batch_size: int, stage_index: int):
  """The grain IterDataset for one stage; `batch_size` is the global micro-batch."""
  seed = seed_for(config.seed, 1000 + stage_index)
  kw = _kw(config)
  if source == "real":
    return pipeline.make_train_dataset([data.real], batch_size, seed, **kw)
  if source == "synthetic":
    return pipeline.make_train_dataset([data.synthetic], batch_size, seed, **kw)
  if source == "mix":
    r = float(config.mix_ratio)
    if not 0.0 <= r <= 1.0:
      raise ConfigError(f"mix_ratio={r} must be in [0, 1] (the synthetic fraction of the stream)")
    return pipeline.make_train_dataset([data.real, data.synthetic], batch_size, seed,
                                       weights=[1.0 - r, r], **kw)
  if source == "paired":
    n_real, n_syn = paired_split(config, batch_size)
    return pipeline.make_paired_dataset(data.real, data.synthetic, n_real, n_syn, seed, **kw)
  raise ConfigError(f"unknown stage source {source!r}")


def paired_split(config, batch_size: int) -> tuple[int, int]:
  """(real, synthetic) rows of an auxbn batch: config.auxbn.synthetic_fraction of the batch."""
  frac = float(config.auxbn.synthetic_fraction)
  n_syn = int(round(batch_size * frac))
  if not 0 < n_syn < batch_size:
    raise ConfigError(f"auxbn.synthetic_fraction={frac} leaves an empty half of batch {batch_size}")
  return batch_size - n_syn, n_syn


def eval_dataset(config, data: Data, batch_size: int):
  kw = _kw(config)
  kw.pop("augment")
  return pipeline.make_eval_dataset(data.eval, batch_size, augment=dict(config.data.get("augment", {}) or {}),
                                    **kw)
