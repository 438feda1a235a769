"""A local image folder or CSV -> a tfds dataset (what `synth-jax data import` runs).

  items, names = scan_folder("photos/")            # photos/<class>/*.jpg; classes sorted
  items, names = scan_csv("labels.csv")            # rows: path,label (header optional)
  split_items = stratified_split(items, test_fraction=0.2, seed=0)   # {"train": [...], "test": [...]}
  dataset_dir = import_images(split_items, names, data_dir, "my_photos")

A folder whose top level is `train/`, `test/`, `val/` (or `validation/`) with class folders inside
keeps those splits. Images are checked by a full decode: corrupt files are skipped with a warning
naming each one and counted (the count is returned in `ImportReport`). RGB JPEGs (PNGs for a PNG
dataset) are stored byte for byte; grayscale, CMYK, palette and alpha images are converted to RGB
and re-encoded; with `resize_shorter=N` images whose shorter side exceeds N are downscaled to N
(e.g. 256 for 224 px training: decoding is then ~2x cheaper every epoch). Each record also keeps its source `filename`. Shards are written in a fixed order
and skipped when already complete, so an interrupted import resumes.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
from typing import Sequence

import numpy as np

from synth_jax import streams
from synth_jax.data import augment, writer as writer_lib
from synth_jax.errors import DataError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_DIRS = {"train": "train", "test": "test", "val": "validation", "validation": "validation"}


@dataclasses.dataclass
class ImportReport:
  dataset_dir: str
  counts: dict          # split -> examples written
  corrupt: list         # paths skipped


def _images_in(directory: str) -> list[str]:
  out = []
  for dirpath, _, files in os.walk(directory, followlinks=True):
    out.extend(os.path.join(dirpath, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
  return sorted(out)


def _class_dirs(root: str) -> list[str]:
  return sorted(d for d in os.listdir(root)
                if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def scan_folder(root: str) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
  """({split: [(path, label)]}, class_names) from root/<class>/... or root/<split>/<class>/..."""
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise DataError(f"image folder {root!r} does not exist; pass a folder laid out as "
                    "root/<class>/*.jpg")
  top = _class_dirs(root)
  split_roots = ({SPLIT_DIRS[d]: os.path.join(root, d) for d in top}
                 if top and all(d in SPLIT_DIRS for d in top) else {"train": root})
  names = sorted({c for r in split_roots.values() for c in _class_dirs(r)})
  if not names:
    raise DataError(f"image folder {root!r} has no class sub-folders; lay it out as "
                    "root/<class>/*.jpg (one folder per class)")
  ids = {n: i for i, n in enumerate(names)}
  splits = {}
  for split, r in split_roots.items():
    splits[split] = [(p, ids[c]) for c in _class_dirs(r) for p in _images_in(os.path.join(r, c))]
  if not any(splits.values()):
    raise DataError(f"image folder {root!r} has class folders but no images with extensions "
                    f"{IMAGE_EXTENSIONS}")
  # A class with no images would train a head unit that never sees an example: refuse it.
  for r in split_roots.values():
    for c in _class_dirs(r):
      if not _images_in(os.path.join(r, c)):
        raise DataError(f"class folder {os.path.join(r, c)!r} has no images (extensions "
                        f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
  return splits, names


def scan_csv(csv_path: str, root: str | None = None) -> tuple[dict[str, list], list[str]]:
  """({"train": [(path, label)]}, class_names) from a CSV of path,label[,split] rows.

  Relative paths are taken from `root` (default: the CSV's folder). Labels may be class names
  (sorted to ids) or integers (kept; names are their strings).
  """
  csv_path = os.path.abspath(os.path.expanduser(csv_path))
  if not os.path.isfile(csv_path):
    raise DataError(f"CSV {csv_path!r} does not exist; pass a file of path,label rows")
  root = os.path.abspath(os.path.expanduser(root)) if root else os.path.dirname(csv_path)
  try:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
  except (UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"CSV {csv_path!r} is not a UTF-8 text CSV ({e}); write path,label rows") from None
  if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
    rows = rows[1:]
  if not rows:
    raise DataError(f"CSV {csv_path!r} has no rows; write one path,label row per image")
  bad = [i + 1 for i, r in enumerate(rows) if len(r) < 2]
  if bad:
    raise DataError(f"CSV {csv_path!r} rows {bad[:10]} have fewer than 2 columns; write path,label")
  labels = [r[1].strip() for r in rows]
  if all(lbl.lstrip("-").isdigit() for lbl in labels):
    n = max(int(lbl) for lbl in labels) + 1
    names, ids = [str(i) for i in range(n)], [int(lbl) for lbl in labels]
  else:
    names = sorted(set(labels))
    ids = [names.index(lbl) for lbl in labels]
  missing = [r[0].strip() for r in rows if not os.path.isfile(os.path.join(root, r[0].strip()))]
  if missing:
    raise DataError(f"CSV {csv_path!r} names {len(missing)} file(s) that do not exist (first: "
                    f"{missing[0]!r}, relative to {root!r}); fix the paths or pass "
                    "--config.data.csv_root=FOLDER")
  splits: dict[str, list] = {}
  for r, label in zip(rows, ids):
    split = SPLIT_DIRS.get(r[2].strip().lower(), "train") if len(r) > 2 else "train"
    splits.setdefault(split, []).append((os.path.join(root, r[0].strip()), label))
  return splits, names


def stratified_split(items: Sequence[tuple[str, int]], test_fraction: float,
                     seed: int) -> dict[str, list]:
  """Seeded per-class split of one item list into train/test (test_fraction of each class)."""
  labels = np.array([lbl for _, lbl in items])
  test = np.zeros(len(items), bool)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    rng = streams.rng(seed, "import_split", int(c))
    test[rng.permutation(members)[:int(round(len(members) * test_fraction))]] = True
  return {"train": [it for it, t in zip(items, test) if not t],
          "test": [it for it, t in zip(items, test) if t]}


def _prepare(path: str, encoding: str, quality: int, resize_shorter: int = 0) -> bytes | None:
  """The bytes to store for one file (RGB, decodable), or None if it is corrupt."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
    img = augment.open_image(raw)
    fmt = img.format
    img.load()  # full decode: catches truncated and corrupt files
  except Exception as e:  # PIL raises many types for bad data
    log.warning("skipping corrupt image %s (%s: %s)", path, type(e).__name__, e)
    return None
  shrink = resize_shorter and min(img.size) > resize_shorter
  keep = img.mode == "RGB" and fmt == {"jpeg": "JPEG", "png": "PNG"}[encoding] and not shrink
  if keep:
    return raw
  img = augment.to_rgb(img)
  if shrink:  # smaller stored images decode faster in every epoch
    from PIL import Image
    f = resize_shorter / min(img.size)
    img = img.resize((max(1, round(img.size[0] * f)), max(1, round(img.size[1] * f))),
                     Image.BILINEAR)
  return writer_lib.encode_image(img, encoding, quality)


def import_images(splits: dict[str, list], class_names: Sequence[str], data_dir: str, name: str,
                  encoding: str = "jpeg", shard_size: int = 1000,
                  jpeg_quality: int = 95, resize_shorter: int = 0) -> ImportReport:
  """Writes every split's (path, label) items as a tfds dataset; see the module docstring."""
  from synth_jax import runs
  features = writer_lib.image_features(class_names, encoding, extras={"filename": "text"})
  w = writer_lib.DatasetWriter(data_dir, name, features, jpeg_quality=jpeg_quality,
                               description="imported with synth-jax data import")
  counts, corrupt = {}, []
  splits = {s: items for s, items in splits.items() if items}
  for split, items in splits.items():
    num_shards = max(1, -(-len(items) // shard_size))
    bar = runs.progress(total=len(items), desc=f"import {name}:{split}", unit="img")
    for i, part in enumerate(np.array_split(np.arange(len(items)), num_shards)):
      if w.shard_complete(split, i, num_shards):
        bar.update(len(part))
        continue
      records = []
      for j in part:
        path, label = items[j]
        data = _prepare(path, encoding, jpeg_quality, resize_shorter)
        bar.update(1)
        if data is None:
          corrupt.append(path)
          continue
        records.append({"image": data, "label": int(label), "filename": os.path.basename(path)})
      w.write_shard(split, i, num_shards, records)
    bar.close()
  if corrupt:
    log.warning("skipped %d corrupt image(s): %s", len(corrupt), ", ".join(corrupt[:10]))
  dataset_dir = w.finalize(sorted(splits))
  import tensorflow_datasets as tfds
  info = tfds.builder_from_directory(dataset_dir).info
  counts = {s: info.splits[s].num_examples for s in splits}
  return ImportReport(dataset_dir, counts, corrupt)
