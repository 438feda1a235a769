"""Writes tfds-readable ArrayRecord datasets, one shard at a time, crash-safe and resumable.

A dataset lives in `<data_dir>/<name>/<version>/` (tfds's own layout), so both
`tfds.builder_from_directory(writer.dataset_dir).as_data_source(split)` and
`tfds.data_source(name, data_dir=data_dir, split=split)` read it, and grain takes the result with
`grain.MapDataset.source(...)`.

API:
  features = image_features(class_names, encoding="png", extras={"prompt": "text", "seed": "int64"})
  w = DatasetWriter(data_dir, name, features)            # features: FeaturesDict or dict
  if not w.shard_complete("train", i, n):
    w.write_shard("train", i, n, examples)               # examples: iterable of dicts
  w.finalize(["train"])                                  # dataset_info.json, features.json, ...

Each example is a dict matching the features. `image` may be a uint8 HWC (or HW gray) numpy
array, already-encoded bytes, or a file path; arrays are encoded with PIL (PNG or JPEG per the
feature's `encoding_format`), so writing needs no TensorFlow. `label` is an int or a class name.

A shard is written under a temp name, renamed into place (`{name}-{split}.array_record-
{i:05d}-of-{n:05d}`), and its size + sha256 go to its own record file beside it
(`.{shard}.record.json`, written atomically after the rename), so it is either complete and
recorded or rewritten; `write_shard` skips a shard that is already complete, which makes rerunning
an interrupted job resume. Different processes may write different shards: each writes only its
own shards' record files, so there is no shared read-modify-write. Per-shard lengths are read back
from the files at `finalize`, which runs once (process 0) after every shard is written: it checks
every shard against its record, merges the records into manifest.json (the only writer of it) and
removes the record files.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from synth_jax import files
from synth_jax.errors import DataError, IntegrityError

VERSION = "1.0.0"
RECORD_SUFFIX = ".record.json"  # `.{shard}.record.json`: one shard's size + sha256 until finalize
_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_EXTRA_KINDS = {"text": None, "int64": np.int64, "int32": np.int32, "float32": np.float32}


def shard_name(name: str, split: str, index: int, num_shards: int) -> str:
  return f"{name}-{split}.array_record-{index:05d}-of-{num_shards:05d}"


def image_features(class_names: Sequence[str], encoding: str = "png",
                   extras: Mapping[str, Any] | None = None, image_shape=(None, None, 3)):
  """A FeaturesDict with `image`, `label` (ClassLabel with names) and scalar extras.

  Args:
    class_names: label names, index = label id.
    encoding: "png" or "jpeg".
    extras: {name: "text" | "int64" | "int32" | "float32" | a tfds FeatureConnector}.
    image_shape: the Image feature's shape; (None, None, 3) accepts any size.
  """
  import tensorflow_datasets as tfds
  if encoding not in ("png", "jpeg"):
    raise DataError(f"image encoding {encoding!r} is not supported; use 'png' or 'jpeg'")
  feats = {"image": tfds.features.Image(shape=image_shape, encoding_format=encoding),
           "label": tfds.features.ClassLabel(names=list(class_names))}
  for key, kind in (extras or {}).items():
    if not isinstance(kind, str):
      feats[key] = kind
    elif kind == "text":
      feats[key] = tfds.features.Text()
    elif kind in _EXTRA_KINDS:
      feats[key] = tfds.features.Tensor(shape=(), dtype=_EXTRA_KINDS[kind])
    else:
      raise DataError(f"extra feature kind {kind!r} for {key!r} is unknown; use one of "
                      f"{sorted(_EXTRA_KINDS)} or a tfds FeatureConnector")
  return tfds.features.FeaturesDict(feats)


def encode_image(image, encoding: str = "png", quality: int = 95, channels: int = 3) -> bytes:
  """uint8 HWC/HW array (or PIL image) -> PNG/JPEG bytes, converted to `channels` channels."""
  from PIL import Image
  if isinstance(image, Image.Image):
    pil = image
  else:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
      raise DataError(f"image array has dtype {arr.dtype}; pass uint8 HWC pixels (0..255)")
    if arr.ndim == 3 and arr.shape[-1] == 1:
      arr = arr[..., 0]
    pil = Image.fromarray(arr)
  mode = "RGB" if channels == 3 else "L"
  if pil.mode != mode:
    pil = pil.convert(mode)
  buf = io.BytesIO()
  if encoding == "jpeg":
    pil.save(buf, format="JPEG", quality=quality)
  else:
    pil.save(buf, format="PNG")
  return buf.getvalue()


class DatasetWriter:
  """Writes the shards and metadata of one tfds dataset (see the module docstring)."""

  def __init__(self, data_dir: str, name: str, features, version: str = VERSION,
               jpeg_quality: int = 95, description: str = ""):
    import tensorflow_datasets as tfds
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
      raise DataError(f"dataset name {name!r} is not valid for tfds; use lower_snake_case "
                      "letters, digits and _ (e.g. 'cars_synthetic')")
    if isinstance(features, dict):
      features = tfds.features.FeaturesDict(features)
    self.name, self.version, self.features = name, version, features
    self.data_dir = os.path.abspath(os.path.expanduser(data_dir))
    self.dataset_dir = os.path.join(self.data_dir, name, version)
    self.jpeg_quality = jpeg_quality
    self.description = description
    os.makedirs(self.dataset_dir, exist_ok=True)

  def _encode(self, example: Mapping[str, Any]) -> bytes:
    import tensorflow_datasets as tfds
    ex = dict(example)
    if set(ex) != set(self.features.keys()):
      raise DataError(f"example keys {sorted(ex)} do not match the dataset features "
                      f"{sorted(self.features.keys())}; pass exactly those keys")
    for key, feat in self.features.items():
      if isinstance(feat, tfds.features.Image) and key in ex:
        value = ex[key]
        if isinstance(value, (bytes, bytearray)):
          ex[key] = io.BytesIO(bytes(value))
        elif not isinstance(value, (str, os.PathLike)):
          channels = feat.shape[-1] if feat.shape[-1] in (1, 3) else 3
          ex[key] = io.BytesIO(encode_image(value, feat.encoding_format or "png",
                                             self.jpeg_quality, channels))
    raw = self.features.serialize_example(self.features.encode_example(ex))
    # tf.train.Example holds a protobuf map, serialized in hash order that changes from process to
    # process; re-serialize with sorted keys so a shard's bytes depend only on its examples (a
    # resumed job must reproduce an uninterrupted one byte for byte).
    from tensorflow_datasets.core import example_serializer
    proto = example_serializer.tf_example_pb2.Example.FromString(raw)
    return proto.SerializeToString(deterministic=True)

  def shard_path(self, split: str, index: int, num_shards: int) -> str:
    return os.path.join(self.dataset_dir, shard_name(self.name, split, index, num_shards))

  def record_path(self, filename: str) -> str:
    """The shard's own record file (size + sha256), until `finalize` merges it into manifest.json."""
    return os.path.join(self.dataset_dir, f".{filename}{RECORD_SUFFIX}")

  def shard_record(self, filename: str) -> dict | None:
    """The shard's record: its own record file, else its manifest.json entry, else None."""
    path = self.record_path(filename)
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    return files.read_manifest(self.dataset_dir).get(filename)

  def verify_shard(self, filename: str) -> None:
    """Raises DataError if the shard has no record, IntegrityError if it does not match it."""
    entry = self.shard_record(filename)
    if entry is None:
      raise DataError(f"shard {filename} in {self.dataset_dir} has no record (not in manifest.json, "
                      "no record file: interrupted before it was recorded); rerun the job to "
                      "rewrite it")
    files.check_entry(os.path.join(self.dataset_dir, filename), entry,
                      "delete it and rerun the job to rewrite it")

  def shard_complete(self, split: str, index: int, num_shards: int) -> bool:
    """True if the shard exists, is recorded and matches its recorded size and hash."""
    try:
      self.verify_shard(shard_name(self.name, split, index, num_shards))
    except (DataError, IntegrityError):
      return False  # absent, renamed but never recorded (crash in between), or altered: rewrite
    return True

  def write_shard(self, split: str, index: int, num_shards: int,
                  examples: Iterable[Mapping[str, Any]]) -> str:
    """Writes one shard (skipped if already complete); returns its path."""
    from array_record.python.array_record_module import ArrayRecordWriter
    if not 0 <= index < num_shards:
      raise DataError(f"shard index {index} is outside 0..{num_shards - 1}; pass 0 <= index < "
                      "num_shards")
    path = self.shard_path(split, index, num_shards)
    if self.shard_complete(split, index, num_shards):
      return path
    tmp = f"{os.path.join(self.dataset_dir, '.' + os.path.basename(path))}.{os.getpid()}.tmp"
    # group_size:1 keeps random access cheap (one record per chunk), as tfds's own writer does.
    writer = ArrayRecordWriter(tmp, "group_size:1")
    try:
      for example in examples:
        writer.write(self._encode(example))
      writer.close()
      os.replace(tmp, path)
    except BaseException:
      with contextlib.suppress(Exception):
        writer.close()
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
      raise
    files.write_json(self.record_path(os.path.basename(path)), files.file_entry(path))
    return path

  def _split_shards(self, split: str) -> tuple[int, list[str]]:
    pattern = re.compile(re.escape(f"{self.name}-{split}.array_record-") +
                         r"(\d{5})-of-(\d{5})$")
    found = {}
    for filename in os.listdir(self.dataset_dir):
      m = pattern.match(filename)
      if m:
        found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if len(found) != 1:
      what = "no shards" if not found else f"shards for several totals {sorted(found)}"
      raise DataError(f"split {split!r} of {self.dataset_dir} has {what}; write every shard "
                      "of one sharding (write_shard(split, i, n, ...)) before finalize")
    (n, have), = found.items()
    missing = sorted(set(range(n)) - have)
    if missing:
      raise DataError(f"split {split!r} of {self.dataset_dir} misses shards {missing} of {n}; "
                      "rerun the job to write them before finalize")
    return n, [shard_name(self.name, split, i, n) for i in range(n)]

  def finalize(self, splits: Sequence[str], metadata: Mapping[str, Any] | None = None) -> str:
    """Checks every shard, then writes tfds metadata (dataset_info.json etc.); returns dataset_dir.

    Args:
      splits: the split names written (e.g. ["train"] or ["train", "test"]).
      metadata: optional JSON-able dict stored as tfds's `metadata` (e.g. generator settings).
    """
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader
    split_infos, records = [], {}
    for split in splits:
      _, shards = self._split_shards(split)
      lengths, nbytes = [], 0
      for filename in shards:
        self.verify_shard(filename)
        records[filename] = self.shard_record(filename)
        path = os.path.join(self.dataset_dir, filename)
        reader = ArrayRecordReader(path)
        lengths.append(int(reader.num_records()))
        reader.close()
        nbytes += os.path.getsize(path)
      template = tfds.core.ShardedFileTemplate(
          data_dir=self.dataset_dir, template=_TEMPLATE, dataset_name=self.name, split=split,
          filetype_suffix="array_record")
      split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=nbytes,
                                             filename_template=template))
    # one writer (this process) merges the shards' records into manifest.json, before the metadata
    # that makes the dataset readable; the record files go only once the manifest holds them
    manifest = files.read_manifest(self.dataset_dir)
    manifest.update(records)
    files.write_json(os.path.join(self.dataset_dir, files.MANIFEST), manifest)
    for filename in records:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.record_path(filename))
    kwargs = {}
    if metadata:
      kwargs["metadata"] = tfds.core.MetadataDict(metadata)
    # check_data=False: tfds's check reads through tf.data, which ArrayRecord does not support.
    tfds.folder_dataset.write_metadata(
        data_dir=self.dataset_dir, features=self.features, split_infos=split_infos,
        version=self.version, check_data=False, description=self.description or None, **kwargs)
    return self.dataset_dir
