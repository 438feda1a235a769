"""`synth-jax data import`: a local folder or CSV -> a tfds dataset under the run directory.

  synth-jax data import --config configs/data/import.py:source=~/photos,name=my_photos \
      --config.workdir=runs/photos

config.data: source (folder or .csv), name (tfds name, lower_snake_case), data_dir (default
<workdir>/tfds), encoding ("jpeg"/"png"), test_fraction (0 = keep the folder's own splits; else a
seeded stratified train/test split of "train"), seed, shard_size, resize_shorter (0 = keep
sizes; e.g. 256 stores images with shorter side <= 256 for faster 224 px training), csv_root (for relative CSV
paths). Writes <data_dir>/<name>/1.0.0/ and <workdir>/data_import.json (dataset dir, counts,
skipped files). Rerunning resumes: complete shards are kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re

from synth_jax import files, runs
from synth_jax.data import folder
from synth_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)


IMPORT_RECORD = "synth_jax_import.json"  # in the dataset dir: what its shards were made from


def validate(config) -> None:
  """Every field of config.data before anything is read or written (checks.VALIDATORS["data"])."""
  from synth_jax import checks
  from synth_jax.checks import Float, Int, OneOf, Path, Text
  cfg = config.get("data")
  if cfg is None or not cfg.get("source"):
    raise ConfigError("config.data.source is empty; pass --config.data.source=FOLDER_OR_CSV")
  checks.check(config, {
      "data.source": Text(True, "~/photos"), "data.name": Text(example="my_photos"),
      "data.data_dir": Text(), "data.encoding": OneOf(("jpeg", "png"), "jpeg"),
      "data.test_fraction": Float(0, 1, 0.2), "data.seed": Int(0, 2**32 - 1, 0),
      "seed": Int(0, 2**32 - 1, 0), "data.shard_size": Int(1, 10**7, 1000),
      "data.csv_root": Path("dir", example="~/photos"), "data.resize_shorter": Int(0, 65536, 256)})
  if cfg.test_fraction >= 1:
    raise checks.bad("data.test_fraction", cfg.test_fraction, "leaves no training images; use a "
                     "fraction in (0, 1), or 0 to keep the source's own splits", 0.2)
  name = _name(cfg)
  if not re.fullmatch(r"[a-z][a-z0-9_]{0,99}", name):
    raise checks.bad("data.name", cfg.name or name, "is not a dataset name (lower_snake_case, "
                     "starting with a letter, at most 100 characters)", "my_photos")
  source = os.path.expanduser(cfg.source)
  run_dir = runs.workdir(config)
  for key, path in (("workdir", run_dir), ("data.data_dir", cfg.get("data_dir") or "")):
    if path and os.path.isdir(source) and checks.inside(path, source):
      raise ConfigError(f"config.{key}={path!r} is inside the import source {cfg.source!r} (the "
                        "import would read its own output); pass a folder outside it")


def _name(cfg) -> str:
  name = cfg.get("name") or os.path.splitext(os.path.basename(os.path.normpath(cfg.source)))[0]
  return name.lower().replace("-", "_").replace(" ", "_")


def data(config) -> str:
  """Runs the import described by config.data; returns the dataset directory."""
  workdir = runs.workdir(config)
  cfg = config.get("data")
  if cfg is None or not cfg.get("source"):
    raise ConfigError("config.data.source is empty; pass --config.data.source=FOLDER_OR_CSV")
  name = _name(cfg)
  data_dir = cfg.get("data_dir") or os.path.join(workdir, "tfds")
  source = os.path.expanduser(cfg.source)
  if source.lower().endswith(".csv"):
    splits, names = folder.scan_csv(source, cfg.get("csv_root") or None)
  else:
    splits, names = folder.scan_folder(source)
  if len(names) < 2:
    raise DataError(f"{cfg.source!r} holds {len(names)} class ({names}); a classifier needs at "
                    "least 2 classes (one folder or label per class)")
  items_sha256 = hashlib.sha256(json.dumps(sorted(
      (s, [(os.path.abspath(p), int(lbl)) for p, lbl in v]) for s, v in splits.items())).encode()
  ).hexdigest()  # the source's images and labels, before any split
  test_fraction = float(cfg.get("test_fraction", 0.0) or 0.0)
  if test_fraction:
    if not 0 < test_fraction < 1:
      raise ConfigError(f"config.data.test_fraction={test_fraction} is outside (0, 1); pass e.g. 0.2")
    if "test" in splits:
      raise ConfigError("config.data.test_fraction is set but the source already has a test "
                        "split; set --config.data.test_fraction=0 to keep it")
    splits.update(folder.stratified_split(splits.pop("train", []), test_fraction,
                                          int(cfg.get("seed", 0))))
    for split in ("train", "test"):
      if not splits[split]:
        raise ConfigError(f"config.data.test_fraction={test_fraction} leaves the {split} split "
                          f"empty ({sum(map(len, splits.values()))} images); pass a fraction "
                          "that keeps images on both sides, e.g. 0.2")
  settings = {"source": os.path.abspath(source), "encoding": cfg.get("encoding", "jpeg"),
              "test_fraction": test_fraction, "seed": int(cfg.get("seed", 0)),
              "shard_size": int(cfg.get("shard_size", 1000)),
              "resize_shorter": int(cfg.get("resize_shorter", 0) or 0), "classes": names,
              "items_sha256": items_sha256}
  _check_import_record(os.path.join(os.path.abspath(os.path.expanduser(data_dir)), name, "1.0.0"),
                       settings)
  report = folder.import_images(splits, names, data_dir, name, encoding=cfg.get("encoding", "jpeg"),
                                shard_size=int(cfg.get("shard_size", 1000)),
                                resize_shorter=int(cfg.get("resize_shorter", 0) or 0))
  files.write_json(os.path.join(workdir, "data_import.json"),
                {"dataset_dir": report.dataset_dir, "classes": names, "counts": report.counts,
                 "skipped_corrupt": report.corrupt})
  log.info("imported %s: %s (%d corrupt skipped) -> %s", name, report.counts, len(report.corrupt),
           report.dataset_dir)
  return report.dataset_dir


def _check_import_record(dataset_dir: str, settings: dict) -> None:
  """Shards are kept by name on a rerun: an import with other settings (another test_fraction, a
  source that changed) would keep old shards beside new ones, e.g. test images also in train.
  So the dataset dir records what it was made from, and anything else is refused."""
  path = os.path.join(dataset_dir, IMPORT_RECORD)
  fix = (f"pass another --config.data.name or --config.data.data_dir, or delete {dataset_dir} "
         "to rebuild every split")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old == settings:
      return
    changed = [k for k in settings if old.get(k) != settings[k]]
    what = ["the source's images" if k == "items_sha256" else k for k in changed]
    raise DataError(f"dataset {dataset_dir} was imported with other settings {what}; "
                    f"re-importing would mix the two (e.g. test images also in train); {fix}")
  if os.path.isdir(dataset_dir) and any(".array_record-" in n or n == "dataset_info.json"
                                        for n in os.listdir(dataset_dir)):
    raise DataError(f"dataset {dataset_dir} already holds a dataset with no import record; "
                    f"{fix}")
  files.write_json(path, settings)
