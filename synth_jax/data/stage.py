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

import logging
import os

from synth_jax import files, runs
from synth_jax.data import folder
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)


def data(config) -> str:
  """Runs the import described by config.data; returns the dataset directory."""
  workdir = runs.workdir(config)
  cfg = config.get("data")
  if cfg is None or not cfg.get("source"):
    raise ConfigError("config.data.source is empty; pass --config.data.source=FOLDER_OR_CSV")
  name = cfg.get("name") or os.path.splitext(os.path.basename(os.path.normpath(cfg.source)))[0]
  name = name.lower().replace("-", "_").replace(" ", "_")
  data_dir = cfg.get("data_dir") or os.path.join(workdir, "tfds")
  source = os.path.expanduser(cfg.source)
  if source.lower().endswith(".csv"):
    splits, names = folder.scan_csv(source, cfg.get("csv_root") or None)
  else:
    splits, names = folder.scan_folder(source)
  test_fraction = float(cfg.get("test_fraction", 0.0) or 0.0)
  if test_fraction:
    if not 0 < test_fraction < 1:
      raise ConfigError(f"config.data.test_fraction={test_fraction} is outside (0, 1); pass e.g. 0.2")
    if "test" in splits:
      raise ConfigError("config.data.test_fraction is set but the source already has a test "
                        "split; set --config.data.test_fraction=0 to keep it")
    splits.update(folder.stratified_split(splits.pop("train", []), test_fraction,
                                          int(cfg.get("seed", 0))))
  report = folder.import_images(splits, names, data_dir, name, encoding=cfg.get("encoding", "jpeg"),
                                shard_size=int(cfg.get("shard_size", 1000)),
                                resize_shorter=int(cfg.get("resize_shorter", 0) or 0))
  files.write_json(os.path.join(workdir, "data_import.json"),
                {"dataset_dir": report.dataset_dir, "classes": names, "counts": report.counts,
                 "skipped_corrupt": report.corrupt})
  log.info("imported %s: %s (%d corrupt skipped) -> %s", name, report.counts, len(report.corrupt),
           report.dataset_dir)
  return report.dataset_dir
