"""`synth-jax data import`: real JPEG/PNG files (incl. corrupt, grayscale, CMYK) -> tfds -> grain."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from synth_jax import cli
from synth_jax.data import folder, pipeline, sources
from synth_jax.errors import DataError

COLORS = {"apple": (220, 30, 30), "banana": (230, 220, 40), "cherry": (30, 30, 200)}


def _make_folder(root):
  """3 classes x 4 images; cherry/2 is grayscale PNG, banana/3 CMYK JPEG, apple/bad.jpg corrupt."""
  for c, color in COLORS.items():
    os.makedirs(root / c)
    for i in range(4):
      img = Image.new("RGB", (40 + i, 30), color)
      if c == "cherry" and i == 2:
        img.convert("L").save(root / c / f"{i}.png")
      elif c == "banana" and i == 3:
        img.convert("CMYK").save(root / c / f"{i}.jpg", quality=95)
      else:
        img.save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}", quality=95)
  (root / "apple" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
  (root / "apple" / "notes.txt").write_text("not an image")


def test_folder_round_trip_through_cli_tfds_and_grain(tmp_path, capfd):
  _make_folder(tmp_path / "photos")
  work = tmp_path / "run"
  rc = cli.main(["data", "import", "--config", "configs/data/import.py:name=fruit",
                 f"--config.data.source={tmp_path / 'photos'}", f"--config.workdir={work}"])
  assert rc == 0
  err = capfd.readouterr().err  # the CLI's logging goes to stderr
  assert "skipping corrupt image" in err and "bad.jpg" in err
  report = json.loads((work / "data_import.json").read_text())
  assert report["classes"] == ["apple", "banana", "cherry"]
  assert report["counts"] == {"train": 12} and report["skipped_corrupt"][0].endswith("bad.jpg")
  split = sources.open_split(report["dataset_dir"], "train")
  assert split.class_names == ["apple", "banana", "cherry"]
  ds = pipeline.make_eval_dataset(split, 12, resolution=16, augment={"crop_pct": 1.0},
                                  process_index=0, process_count=1)
  batch = next(iter(ds))
  assert batch["mask"].all()
  # Undo the normalization: every image's mean colour tells its class.
  rgb = batch["image"] * (np.array([0.229, 0.224, 0.225]) * 255) + np.array([0.485, 0.456, 0.406]) * 255
  for img, label in zip(rgb, batch["label"]):
    name = split.class_names[label]
    if name == "cherry" and np.allclose(img[..., 0], img[..., 1], atol=1):
      continue  # the grayscale one: R == G == B
    np.testing.assert_allclose(img.mean((0, 1)), COLORS[name], atol=12)
  assert sum(np.allclose(i[..., 0], i[..., 2], atol=1) for i in rgb) == 1  # one gray, now RGB
  # Rerun: a no-op that keeps the shards.
  shard = os.path.join(report["dataset_dir"], "fruit-train.array_record-00000-of-00001")
  mtime = os.path.getmtime(shard)
  assert cli.main(["data", "import", "--config", "configs/data/import.py:name=fruit",
                   f"--config.data.source={tmp_path / 'photos'}", f"--config.workdir={work}"]) == 0
  assert os.path.getmtime(shard) == mtime


def test_csv_import_through_cli_tfds_and_grain(tmp_path):
  """A CSV of path,label[,split] (relative and absolute paths, PNG and JPEG) -> `synth-jax data
  import` -> a tfds dataset whose label names, splits and pixels match the CSV."""
  import tensorflow_datasets as tfds
  pics = tmp_path / "pics"
  os.makedirs(pics / "sub")
  rows = ["path,label,split"]
  # Labels out of sorted order, so a reader that keeps first-seen order gives other ids.
  for i, (c, split) in enumerate([("cherry", "train"), ("apple", "train"), ("banana", "train"),
                                  ("apple", "train"), ("cherry", "test"), ("banana", "test")]):
    name = f"sub/{i}.{'png' if i % 2 else 'jpg'}"
    Image.new("RGB", (20 + i, 18), COLORS[c]).save(pics / name, quality=95)
    rows.append(f"{pics / name if i == 3 else name},{c},{split}")
  (pics / "labels.csv").write_text("\n".join(rows) + "\n")
  work = tmp_path / "run"
  assert cli.main(["data", "import", "--config", "configs/data/import.py:name=fruit_csv",
                   f"--config.data.source={pics / 'labels.csv'}",
                   f"--config.workdir={work}"]) == 0
  report = json.loads((work / "data_import.json").read_text())
  assert report["classes"] == ["apple", "banana", "cherry"]
  assert report["counts"] == {"train": 4, "test": 2} and report["skipped_corrupt"] == []
  info = tfds.builder_from_directory(report["dataset_dir"]).info
  assert info.features["label"].names == ["apple", "banana", "cherry"]
  assert {s: info.splits[s].num_examples for s in info.splits} == {"train": 4, "test": 2}
  for split, want in (("train", [2, 0, 1, 0]), ("test", [2, 1])):
    data = sources.open_split(report["dataset_dir"], split)
    assert data.class_names == ["apple", "banana", "cherry"]
    np.testing.assert_array_equal(data.labels(), want)
    batch = next(iter(pipeline.make_eval_dataset(data, len(want), resolution=16,
                                                 augment={"crop_pct": 1.0, "uint8": True},
                                                 process_index=0, process_count=1)))
    assert batch["image"].dtype == np.uint8 and batch["mask"].all()
    for img, label in zip(batch["image"].astype(float), batch["label"]):
      np.testing.assert_allclose(img.mean((0, 1)), COLORS[data.class_names[label]], atol=6)


def test_split_folders_csv_and_stratified_split(tmp_path):
  for split in ("train", "val"):
    for c in ("b", "a"):
      os.makedirs(tmp_path / "f" / split / c)
      Image.new("RGB", (8, 8)).save(tmp_path / "f" / split / c / "x.png")
  splits, names = folder.scan_folder(str(tmp_path / "f"))
  assert names == ["a", "b"] and sorted(splits) == ["train", "validation"]
  assert [lbl for _, lbl in splits["train"]] == [0, 1]
  (tmp_path / "l.csv").write_text("path,label\nf/train/a/x.png,dog\nf/train/b/x.png,cat\n")
  splits, names = folder.scan_csv(str(tmp_path / "l.csv"))
  assert names == ["cat", "dog"] and splits["train"][0][1] == 1
  assert splits["train"][0][0] == str(tmp_path / "f/train/a/x.png")
  items = [(f"{i}", i % 2) for i in range(20)]
  parts = folder.stratified_split(items, 0.2, seed=0)
  assert len(parts["test"]) == 4 and sorted(l for _, l in parts["test"]) == [0, 0, 1, 1]
  assert parts == folder.stratified_split(items, 0.2, seed=0)


def test_bad_sources_name_the_fix(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    folder.scan_folder(str(tmp_path / "nope"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(DataError, match="no class sub-folders"):
    folder.scan_folder(str(tmp_path / "empty"))
  rc = cli.main(["data", "import", "--config", "configs/data/import.py",
                 f"--config.workdir={tmp_path / 'w'}"])
  assert rc == 2


def test_resize_shorter_downscales_large_images(tmp_path):
  os.makedirs(tmp_path / "f" / "a")
  Image.new("RGB", (300, 200), (10, 200, 10)).save(tmp_path / "f" / "a" / "big.jpg")
  Image.new("RGB", (50, 40), (10, 200, 10)).save(tmp_path / "f" / "a" / "small.jpg")
  splits, names = folder.scan_folder(str(tmp_path / "f"))
  report = folder.import_images(splits, names, str(tmp_path / "tfds"), "sized", resize_shorter=64)
  split = sources.open_split(report.dataset_dir, "train")
  sizes = sorted(Image.open(__import__("io").BytesIO(split.source[i]["image"])).size
                 for i in range(2))
  assert sizes == [(50, 40), (96, 64)]
