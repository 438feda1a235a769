"""grain input pipelines for training and evaluation (real, synthetic, mixed, paired).

  from synth_jax.data import pipeline, sources
  real = sources.open_split(real_dir, "train")
  syn = synthetic.open_synthetic(syn_dir, real.class_names)           # labels in real's space
  ds = pipeline.make_train_dataset(
      [pipeline.Stream(real, indices=sources.few_shot_indices(real.labels(), 16, seed)),
       pipeline.Stream(syn, domain=1)],
      batch_size=256, seed=0, weights=[0.5, 0.5], resolution=224, workers=8)
  it = iter(ds)                      # grain DatasetIterator
  batch = next(it)                   # {"image": f32[B_host,H,W,3], "label": i32[B_host],
                                     #  "domain": i32[B_host]}
  state = it.get_state(); it.set_state(state)   # or grain.checkpoint.CheckpointSave(it) in orbax
  ds = pipeline.make_paired_dataset(real, syn, real_batch=128, synthetic_batch=128, seed=0)
  ev = pipeline.make_eval_dataset(test_split, batch_size=512, resolution=224)
  for b in ev: ...                   # + "mask": bool[B_host]; padded examples have mask False

Order of work: indices -> shuffle(seed, reshuffled every epoch) -> repeat -> mix by weights ->
load + decode + augment (per-element RNG from (seed, global position)) -> keep this process's
share (global position p::P) -> batch -> worker processes. Everything before the process split
is the same on every host, so the global stream is identical for any number of hosts and any
number of workers, and a restored iterator continues with exactly the next element.

With `augment={"uint8": True}` images come as uint8 (4x less host work and inter-process
traffic; the fastest setting) and the train step normalizes them with
`synth_jax.data.mixup.normalize_images`.

`batch_size` is global; each process yields batch_size / process_count examples.
Corrupt images are counted (`corrupt_counts()`, per process) and logged with the record's
name; in training the next record of the same source takes their place, in evaluation they are
masked out, so a run never crashes on a bad file.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from synth_jax.data import augment as aug
from synth_jax.streams import int_seed
from synth_jax.data.sources import Split
from synth_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)
_CORRUPT: collections.Counter = collections.Counter()
_MAX_FALLBACK = 32


def corrupt_counts() -> dict:
  """{dataset:split -> number of corrupt records skipped} in this process."""
  return dict(_CORRUPT)


@dataclasses.dataclass
class Stream:
  """One source of training examples: a split, an optional subset, label mapping and domain."""
  split: Split
  indices: np.ndarray | None = None      # e.g. few-shot; None = all records
  label_map: np.ndarray | None = None    # source label -> target label
  domain: int = 0                        # 0 = real, 1 = synthetic


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  resolution: int = 224
  flip: bool = True
  color_jitter: float = 0.0
  randaugment_ops: int = 0
  randaugment_magnitude: float = 9.0
  min_scale: float = 0.08
  crop_pct: float = 0.875                # eval: resize to resolution / crop_pct, center crop
  uint8: bool = False                    # yield raw uint8 pixels (4x less host work and IPC);
                                         # normalize on device with mixup.normalize_images
  mean: Any = None                       # input normalisation in [0, 1] units (None: ImageNet);
  std: Any = None                        # the trainer sets the checkpoint's (models.input_norm)


def _dtype(cfg: AugmentConfig):
  return np.uint8 if cfg.uint8 else np.float32


def _as_stream(s) -> Stream:
  return s if isinstance(s, Stream) else Stream(s)


class _Load(grain.transforms.RandomMap):
  """(stream, index) -> decoded, augmented, normalized example; corrupt -> the next record."""

  def __init__(self, streams: Sequence[Stream], cfg: AugmentConfig, train: bool):
    self.sources = [s.split.source for s in streams]
    self.names = [f"{s.split.name}:{s.split.split}" for s in streams]
    self.maps = [s.label_map for s in streams]
    self.domains = [s.domain for s in streams]
    self.subsets = [s.indices for s in streams]
    self.cfg, self.train = cfg, train

  def _record(self, stream: int, pos: int):
    subset = self.subsets[stream]
    n = len(subset) if subset is not None else len(self.sources[stream])
    pos %= n
    return (int(subset[pos]) if subset is not None else pos), n

  def _image(self, data, rng):
    c = self.cfg
    if self.train:
      img = aug.train_image(data, rng, c.resolution, c.flip, c.color_jitter, c.randaugment_ops,
                            c.randaugment_magnitude, scale=(c.min_scale, 1.0))
    else:
      img = aug.eval_image(data, c.resolution, c.crop_pct)
    return img if c.uint8 else aug.normalize(img, c.mean, c.std)

  def random_map(self, element, rng: np.random.Generator):
    stream, pos = element
    for attempt in range(_MAX_FALLBACK):
      index, n = self._record(stream, pos + attempt)
      record = self.sources[stream][index]
      try:
        image = self._image(record["image"], rng)
      except Exception as e:  # PIL raises many types for bad data
        _CORRUPT[self.names[stream]] += 1
        log.warning("skipping corrupt image %s[%d] (%s: %s); %d skipped so far", self.names[stream],
                    index, type(e).__name__, e, _CORRUPT[self.names[stream]])
        if not self.train:
          res = self.cfg.resolution
          return {"image": np.zeros((res, res, 3), _dtype(self.cfg)), "label": np.int32(0),
                  "mask": np.bool_(False)}
        continue
      label = int(record["label"])
      if self.maps[stream] is not None:
        label = int(self.maps[stream][label])
      out = {"image": image, "label": np.int32(label), "domain": np.int32(self.domains[stream])}
      if not self.train:
        out = {"image": image, "label": np.int32(label), "mask": np.bool_(True)}
      return out
    raise DataError(f"{_MAX_FALLBACK} consecutive corrupt images in {self.names[stream]} near "
                    f"record {index}; check the dataset files (re-import or regenerate them)")


def _process(process_index, process_count):
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return process_index, process_count


def _host_batch(batch_size: int, process_count: int, what: str = "batch_size") -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ConfigError(f"{what}={batch_size} is not a positive multiple of the process count "
                      f"{process_count}; pick a multiple of {process_count}")
  return batch_size // process_count


def _index_stream(i: int, stream: Stream, seed: int, phase: int,
                  num_epochs: int | None) -> grain.MapDataset:
  n = len(stream.indices) if stream.indices is not None else len(stream.split)
  if n == 0:
    raise DataError(f"stream {stream.split.name}:{stream.split.split} is empty; check the "
                    "dataset and the few-shot selection")
  order = grain.MapDataset.range(n).shuffle(seed=int_seed(seed, "shuffle", phase, i))
  return (order.repeat(num_epochs)
          .map(lambda pos, i=i: (i, pos)))


def _finish(ds: grain.MapDataset, workers: int, threads: int, buffer: int) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer))
  if workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library has no argv
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return it


def make_train_dataset(streams, batch_size: int, seed: int, *, weights: Sequence[float] | None =
                       None, augment: AugmentConfig | Mapping[str, Any] | None = None,
                       resolution: int | None = None, num_epochs: int | None = None,
                       phase: int = 0, workers: int = 0, threads: int = 8, prefetch: int = 64,
                       process_index: int | None = None,
                       process_count: int | None = None) -> grain.IterDataset:
  """Shuffled, augmented, batched training stream over one or several (mixed) sources.

  Args:
    streams: a Split, a Stream, or a list of them (mixed by `weights`, e.g. real:synthetic).
    batch_size: global batch size (divided among processes).
    seed: the run's seed; shuffling and augmentation draw streams "shuffle" and "augment" of
      (seed, phase) (synth_jax.streams).
    phase: which training phase this stream feeds (phases shuffle differently).
    weights: mixing proportions per stream (normalized); default: equal.
    augment: AugmentConfig or dict of its fields; `resolution` overrides its resolution.
    num_epochs: None = infinite (use steps); else epochs of the (single) stream.
    workers: grain worker processes (0 = threads in this process only).
  Returns:
    a grain IterDataset; `iter()` it for a DatasetIterator with get_state/set_state.
  """
  streams = [_as_stream(s) for s in (streams if isinstance(streams, (list, tuple)) else [streams])]
  cfg = _augment_config(augment, resolution)
  p, count = _process(process_index, process_count)
  host_batch = _host_batch(batch_size, count)
  if num_epochs is not None and len(streams) > 1:
    raise ConfigError("num_epochs with several mixed streams is ambiguous; pass num_epochs=None "
                      "and train for a number of steps")
  parts = [_index_stream(i, s, seed, phase, num_epochs) for i, s in enumerate(streams)]
  if len(parts) > 1:
    w = [1.0] * len(parts) if weights is None else [float(x) for x in weights]
    if len(w) != len(parts) or min(w) < 0 or sum(w) <= 0:
      raise ConfigError(f"mixing weights {list(w)} do not fit {len(parts)} streams; pass one "
                        "non-negative weight per stream")
    kept = [(d, x) for d, x in zip(parts, w) if x > 0]
    ds = grain.MapDataset.mix([d for d, _ in kept], weights=[x for _, x in kept])
  else:
    ds = parts[0]
  ds = ds.random_map(_Load(streams, cfg, train=True), seed=int_seed(seed, "augment", phase))
  ds = ds[p::count].batch(host_batch, drop_remainder=True)
  return _finish(ds, workers, threads, prefetch)


def make_paired_dataset(real, synthetic, real_batch: int, synthetic_batch: int, seed: int,
                        phase: int = 0, **kwargs) -> grain.IterDataset:
  """Batches of `real_batch` real then `synthetic_batch` synthetic examples (global sizes).

  For per-domain BatchNorm: rows [:real_batch/P] of every host batch are real (domain 0), the
  rest synthetic (domain 1). kwargs as make_train_dataset (augment, workers, ...).
  """
  workers = kwargs.pop("workers", 0)
  threads, prefetch = kwargs.pop("threads", 8), kwargs.pop("prefetch", 64)
  real, synthetic = _as_stream(real), _as_stream(synthetic)
  real = dataclasses.replace(real, domain=0)
  synthetic = dataclasses.replace(synthetic, domain=1)
  p, count = _process(kwargs.pop("process_index", None), kwargs.pop("process_count", None))
  cfg = _augment_config(kwargs.pop("augment", None), kwargs.pop("resolution", None))
  if kwargs:
    raise ConfigError(f"unknown arguments {sorted(kwargs)} for make_paired_dataset")
  halves = []
  for i, (s, b) in enumerate(((real, real_batch), (synthetic, synthetic_batch))):
    hb = _host_batch(b, count, ("real_batch", "synthetic_batch")[i])
    d = _index_stream(i, s, seed, phase, None).random_map(
        _Load([real, synthetic], cfg, train=True), seed=int_seed(seed, "augment", phase, i))
    halves.append(d[p::count].batch(hb, drop_remainder=True))
  common = min(len(h) for h in halves)  # both are (near) infinite; zip needs equal lengths
  ds = grain.experimental.ZipMapDataset([h[:common] for h in halves]).map(
      lambda pair: {k: np.concatenate([pair[0][k], pair[1][k]]) for k in pair[0]})
  return _finish(ds, workers, threads, prefetch)


def make_eval_dataset(split, batch_size: int, *, augment: AugmentConfig | Mapping[str, Any] |
                      None = None, resolution: int | None = None, indices: np.ndarray | None = None,
                      label_map: np.ndarray | None = None, workers: int = 0, threads: int = 8,
                      prefetch: int = 64, process_index: int | None = None,
                      process_count: int | None = None) -> grain.IterDataset:
  """Every example once, in order, resized + center-cropped; the last batch padded and masked.

  All processes yield the same number of batches (needed for multi-host jit); the union of the
  masked-in rows over processes is each example exactly once.
  """
  if isinstance(split, Stream):  # its subset and label map, unless given here
    indices = split.indices if indices is None else indices
    label_map = split.label_map if label_map is None else label_map
    split = split.split
  stream = Stream(split, indices=indices, label_map=label_map)
  cfg = _augment_config(augment, resolution)
  p, count = _process(process_index, process_count)
  host_batch = _host_batch(batch_size, count)
  n = len(indices) if indices is not None else len(stream.split)
  padded = -(-n // batch_size) * batch_size
  load = _Load([stream], cfg, train=False)
  res = cfg.resolution

  def get(pos):
    if pos >= n:
      return {"image": np.zeros((res, res, 3), _dtype(cfg)), "label": np.int32(0),
              "mask": np.bool_(False)}
    return load.random_map((0, pos), None)

  ds = grain.MapDataset.range(padded).map(get)[p::count].batch(host_batch)
  return _finish(ds, workers, threads, prefetch)


def _augment_config(augment, resolution) -> AugmentConfig:
  if augment is None:
    cfg = AugmentConfig()
  elif isinstance(augment, AugmentConfig):
    cfg = augment
  else:
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = sorted(set(dict(augment)) - fields)
    if unknown:
      raise ConfigError(f"unknown augment keys {unknown}; known: {sorted(fields)}")
    cfg = AugmentConfig(**dict(augment))
  if resolution is not None:
    cfg = dataclasses.replace(cfg, resolution=int(resolution))
  return cfg
