"""DatasetWriter: shards tfds and grain read back, resumable, truncation detected."""
import os

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from synth_jax import files
from synth_jax.data import writer as writer_lib
from synth_jax.errors import DataError, IntegrityError

CLASSES = ["cat", "dog", "sea turtle"]


def _examples(start, count, rng_seed):
  rng = np.random.default_rng(rng_seed)
  for i in range(start, start + count):
    yield {"image": rng.integers(0, 256, (6 + i % 3, 5, 3), dtype=np.uint8),
           "label": i % 3, "class_name": CLASSES[i % 3], "prompt": f"a photo of {CLASSES[i % 3]} {i}",
           "seed": 1000 + i}


def _write(tmp_path, encoding="png"):
  feats = writer_lib.image_features(CLASSES, encoding=encoding,
                                    extras={"class_name": "text", "prompt": "text", "seed": "int64"})
  w = writer_lib.DatasetWriter(str(tmp_path), "toy_synth", feats)
  w.write_shard("train", 0, 2, _examples(0, 4, 0))
  w.write_shard("train", 1, 2, _examples(4, 3, 1))
  w.finalize(["train"], metadata={"generator": "test"})
  return w


def test_round_trip_through_tfds_and_grain(tmp_path):
  w = _write(tmp_path)
  expected = list(_examples(0, 4, 0)) + list(_examples(4, 3, 1))
  src = tfds.builder_from_directory(w.dataset_dir).as_data_source("train")
  assert len(src) == 7
  ds = grain.MapDataset.source(src)
  for i, ex in enumerate(expected):
    got = ds[i]
    np.testing.assert_array_equal(got["image"], ex["image"])  # PNG is lossless
    assert int(got["label"]) == ex["label"]
    assert got["class_name"].decode() == ex["class_name"]
    assert got["prompt"].decode() == ex["prompt"]
    assert int(got["seed"]) == ex["seed"]
  builder = tfds.builder_from_directory(w.dataset_dir)
  assert builder.info.features["label"].names == CLASSES
  assert builder.info.splits["train"].shard_lengths == [4, 3]
  # tfds.data_source finds it by name under data_dir too.
  src2 = tfds.data_source("toy_synth", data_dir=str(tmp_path), split="train", download=False)
  assert len(src2) == 7 and int(src2[6]["label"]) == expected[6]["label"]


def test_jpeg_and_grayscale_input(tmp_path):
  feats = writer_lib.image_features(CLASSES, encoding="jpeg")
  w = writer_lib.DatasetWriter(str(tmp_path), "toy_jpeg", feats)
  gray = np.full((9, 7), 120, np.uint8)
  w.write_shard("test", 0, 1, [{"image": gray, "label": "dog"}])
  w.finalize(["test"])
  got = tfds.builder_from_directory(w.dataset_dir).as_data_source("test")[0]
  assert got["image"].shape == (9, 7, 3) and int(got["label"]) == 1
  assert np.abs(got["image"].astype(int) - 120).max() <= 2  # JPEG of a flat image is ~exact


def test_complete_shard_is_skipped_and_truncation_detected(tmp_path):
  w = _write(tmp_path)
  path = w.shard_path("train", 1, 2)
  mtime = os.path.getmtime(path)
  assert w.shard_complete("train", 1, 2)
  w.write_shard("train", 1, 2, iter(()))  # skipped: would have written an empty shard
  assert os.path.getmtime(path) == mtime
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 10)
  name = os.path.basename(path)
  with pytest.raises(IntegrityError, match=name):
    w.verify_shard(name)
  assert not w.shard_complete("train", 1, 2)
  with pytest.raises(IntegrityError, match=name):
    w.finalize(["train"])
  w.write_shard("train", 1, 2, _examples(4, 3, 1))  # rewritten
  w.finalize(["train"])
  manifest = files.read_manifest(w.dataset_dir)
  del manifest[name]  # e.g. lost to a concurrent writer
  files.write_json(os.path.join(w.dataset_dir, files.MANIFEST), manifest)
  with pytest.raises(DataError, match="has no record"):
    w.finalize(["train"])


def test_missing_shard_is_named(tmp_path):
  w = writer_lib.DatasetWriter(str(tmp_path), "toy_missing", writer_lib.image_features(CLASSES))
  w.write_shard("train", 0, 3, [{"image": np.zeros((4, 4, 3), np.uint8), "label": 0}])
  with pytest.raises(DataError, match="do not match the dataset features"):
    w.write_shard("train", 1, 3, _examples(0, 2, 0))
  with pytest.raises(DataError, match=r"misses shards \[1, 2\]"):
    w.finalize(["train"])
  with pytest.raises(DataError, match="lower_snake_case"):
    writer_lib.DatasetWriter(str(tmp_path), "Bad-Name", writer_lib.image_features(CLASSES))
