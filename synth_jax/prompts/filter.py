"""`synth-jax filter`: drop synthetic images that CLIP scores low against their class, or misclassifies.

    synth-jax filter --config configs/filter/base.py:synthetic=/runs/gen/cars_syn/1.0.0,\
clip=/models/clip-vit-base-patch16 --config.workdir=/runs/filter/cars

Each image gets `score` = cosine(image embedding, its class's text embedding), the class text
embedding being the normalized mean over `templates` ("a photo of a {}."), and a zero-shot
prediction = argmax over all classes. Per class, the dropped set is the union of the
`drop_fraction` lowest scores (floor(n * fraction) images) and, with `drop_misclassified`, the
images whose zero-shot prediction is another class (the CLIP filtering of He et al., ICLR'23);
`min_keep_per_class` of the best-scoring images always stay so no class disappears.

Outputs under the workdir: `scores/chunk_*.npz` (per-image scores, written chunk by chunk so an
interrupted run resumes where it stopped), the filtered dataset `<output_name>/<version>/`
(same features and record bytes as the input, kept images in their input order) and
`filter_report.json` (written last: a run with it is finished and a rerun is a no-op).
"""
from __future__ import annotations

import io
import json
import re
import logging
import math
import os
from typing import Sequence

import numpy as np

from synth_jax import faults, files, runs
from synth_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)
REPORT = "filter_report.json"


def decide(labels: np.ndarray, scores: np.ndarray, predictions: np.ndarray, num_classes: int,
           drop_fraction: float = 0.0, drop_misclassified: bool = False,
           min_keep_per_class: int = 1) -> np.ndarray:
  """Boolean keep mask (N,) from per-image class scores and zero-shot predictions (see module doc)."""
  labels, scores, predictions = map(np.asarray, (labels, scores, predictions))
  keep = np.ones(len(labels), bool)
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    if not len(members):
      continue
    # Ascending by score, ties broken by index, so the choice is deterministic.
    ranked = members[np.lexsort((members, scores[members]))]
    drop = np.zeros(len(labels), bool)
    drop[ranked[:int(math.floor(len(members) * drop_fraction + 1e-9))]] = True
    if drop_misclassified:
      drop[members[predictions[members] != c]] = True
    kept = int(len(members) - drop[members].sum())
    if kept < min_keep_per_class:  # give back the best-scoring dropped images
      back = [i for i in ranked[::-1] if drop[i]][:min_keep_per_class - kept]
      drop[back] = False
    keep[members] = ~drop[members]
  return keep


def class_text_embeddings(clip, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
  """(C, D): for each class the normalized mean of its template embeddings (CLIP's ensembling)."""
  texts = [t.format(n) for n in names for t in templates]
  emb = clip.embed_text(texts).reshape(len(names), len(templates), -1).mean(1)
  return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def _decode(blob) -> np.ndarray:
  from PIL import Image
  if isinstance(blob, np.ndarray) and blob.dtype == np.uint8 and blob.ndim == 3:
    return blob  # already decoded
  return np.asarray(Image.open(io.BytesIO(bytes(blob))).convert("RGB"))


def validate(config):
  """Every field before CLIP loads or anything is written (checks.VALIDATORS["filter"])."""
  from synth_jax import checks
  from synth_jax.checks import Bool, Float, Int, OneOf, Path, Text
  checks.check(config, {
      "synthetic": Path("dir", True, "runs/gen/cars/synthetic/1.0.0"), "split": Text(True),
      "clip": Path("any", True, "/models/clip-vit-base-patch16"), "clip_model_name": Text(),
      "clip_model_config": Path("file", example="config.json"),
      "clip_dtype": OneOf(checks.DTYPES, "float32"), "prompts_json": Path("file"),
      "drop_misclassified": Bool(),  # drop_fraction: _check, [0, 1)
      "min_keep_per_class": Int(0, 10**9, 1), "batch_size": Int(1, 4096, 64),
      "chunk_size": Int(1, 10**7, 2048), "shard_size": Int(1, 10**7, 1000), "output_name": Text()})
  t = config.get("templates")
  if not isinstance(t, (list, tuple)) or not all(isinstance(x, str) for x in t):
    raise checks.bad("templates", t, "is not a list of prompts", "\"['a photo of a {}.']\"")
  if config.get("output_name") and not re.fullmatch(r"[a-z][a-z0-9_]{0,99}", config.output_name):
    raise checks.bad("output_name", config.output_name, "is not a lower_snake_case name", "cars_clean")
  checks.not_inside_input(runs.workdir(config), "synthetic", config.synthetic)
  _check(config)


def _check(config):
  if not config.get("synthetic"):
    raise ConfigError("config.synthetic is empty; pass the synthetic dataset dir the generate stage wrote")
  if not config.get("clip"):
    raise ConfigError("config.clip is empty; pass an HF CLIP folder or OpenCLIP checkpoint")
  if not 0.0 <= config.drop_fraction < 1.0:
    raise ConfigError(f"config.drop_fraction={config.drop_fraction} is outside [0, 1); pass e.g. 0.1")
  if not config.drop_fraction and not config.drop_misclassified:
    raise ConfigError("nothing to filter: set config.drop_fraction > 0 and/or "
                      "config.drop_misclassified=True")
  if not config.templates or any("{}" not in t for t in config.templates):
    raise ConfigError(f"config.templates {list(config.templates)} must each contain '{{}}' "
                      "for the class name")


def _class_names(config, names: Sequence[str]) -> list[str]:
  """Names used in the text prompts: label names, or prompts.json's disambiguated names."""
  out = [n.replace("_", " ") for n in names]
  if config.get("prompts_json"):
    with open(config.prompts_json) as f:
      classes = json.load(f)["classes"]
    by_name = {str(c["name"]).replace("_", " ").lower(): c for c in classes}
    for i, n in enumerate(out):
      c = by_name.get(n.lower())
      if c and c.get("disambiguated"):
        out[i] = str(c["disambiguated"])
  return out


def _score(config, split, clip, text_emb, run_dir) -> tuple[np.ndarray, np.ndarray]:
  """Per-image (score vs own class, zero-shot prediction), chunk files resumed if present."""
  labels = split.labels()
  n, chunk = len(labels), int(config.chunk_size)
  scores, preds = np.zeros(n, np.float32), np.zeros(n, np.int64)
  os.makedirs(os.path.join(run_dir, "scores"), exist_ok=True)
  bar = runs.progress(total=n, desc="filter: CLIP scores", unit="img")
  for k, start in enumerate(range(0, n, chunk)):
    path = os.path.join(run_dir, "scores", f"chunk_{k:05d}.npz")
    stop = min(start + chunk, n)
    if os.path.exists(path):
      with np.load(path) as z:
        scores[start:stop], preds[start:stop] = z["scores"], z["predictions"]
      bar.update(stop - start)
      continue
    if runs.should_stop():
      raise runs.Preempted(f"filter stopped at image {start}/{n}; rerun to resume")
    idx = list(range(start, stop))
    records = (split.source.__getitems__(idx) if hasattr(split.source, "__getitems__")
               else [split.source[i] for i in idx])
    emb = clip.embed_images([_decode(r["image"]) for r in records])
    sims = emb @ text_emb.T
    scores[start:stop] = sims[np.arange(len(idx)), labels[start:stop]]
    preds[start:stop] = sims.argmax(-1)
    buf = io.BytesIO()
    np.savez(buf, scores=scores[start:stop], predictions=preds[start:stop])
    files.write_bytes(path, buf.getvalue())
    faults.point("filter_chunk")
    bar.update(stop - start)
  bar.close()
  return scores, preds


def _write(config, split, dataset_dir: str, keep: np.ndarray, run_dir: str) -> str:
  import tensorflow_datasets as tfds

  from synth_jax.data import writer as writer_lib
  builder = tfds.builder_from_directory(dataset_dir)
  name = config.output_name or f"{builder.info.name}_filtered"
  w = writer_lib.DatasetWriter(os.path.join(run_dir, "data"), name, builder.info.features,
                               description=f"{builder.info.name} filtered by CLIP")
  kept = np.flatnonzero(keep)
  per = int(config.shard_size)
  num_shards = max(1, math.ceil(len(kept) / per))
  for s in runs.progress(range(num_shards), desc="filter: write shards", unit="shard"):
    if runs.should_stop():
      raise runs.Preempted(f"filter stopped before shard {s}/{num_shards}; rerun to resume")
    part = kept[s * per:(s + 1) * per].tolist()
    w.write_shard(config.split, s, num_shards,
                  (dict(split.source[i]) for i in part))
  return w.finalize([config.split], metadata={"filtered_from": dataset_dir})


def filter_dataset(config):
  """The `filter` stage (see the module docstring). Returns the report dict."""
  from synth_jax.data import sources
  from synth_jax.models import clip as clip_lib
  run_dir = runs.workdir(config)
  report_path = os.path.join(run_dir, REPORT)
  if os.path.exists(report_path):
    log.info("filter: %s exists; nothing to do", report_path)
    with open(report_path) as f:
      return json.load(f)
  _check(config)
  path = os.path.abspath(os.path.expanduser(config.synthetic))
  dataset_dir = sources.find_dataset_dir(path)
  if dataset_dir is None:
    raise DataError(f"config.synthetic={config.synthetic!r} holds no dataset_info.json; pass the "
                    "dataset directory the generate stage wrote")
  split = sources.open_split(dataset_dir, config.split)
  clip = clip_lib.load_clip(config.clip, dtype=config.clip_dtype,
                            model_name=config.clip_model_name or None,
                            model_config=config.clip_model_config or None,
                            batch_size=config.batch_size)
  names = _class_names(config, split.class_names)
  text_emb = class_text_embeddings(clip, names, list(config.templates))
  scores, preds = _score(config, split, clip, text_emb, run_dir)
  labels = split.labels()
  keep = decide(labels, scores, preds, len(names), config.drop_fraction, config.drop_misclassified,
                config.min_keep_per_class)
  out_dir = _write(config, split, dataset_dir, keep, run_dir)
  report = _report(config, split.class_names, names, labels, scores, preds, keep, dataset_dir, out_dir)
  files.write_json(report_path, report)
  log.info("filter: kept %d of %d images -> %s", report["kept"], report["total"], out_dir)
  return report


def _report(config, label_names, names, labels, scores, preds, keep, src, out) -> dict:
  classes = []
  for c, name in enumerate(label_names):
    members = np.flatnonzero(labels == c)
    dropped = [{"index": int(i), "score": round(float(scores[i]), 6),
                "predicted": label_names[int(preds[i])],
                "reason": "misclassified" if config.drop_misclassified and preds[i] != c else "low_score"}
               for i in members if not keep[i]]
    classes.append({"id": c, "name": name, "prompt_name": names[c], "total": int(len(members)),
                    "kept": int(keep[members].sum()), "dropped": dropped,
                    "mean_score": round(float(scores[members].mean()), 6) if len(members) else None,
                    "zero_shot_accuracy": (round(float((preds[members] == c).mean()), 6)
                                           if len(members) else None)})
  return {"input": src, "output": out, "clip": config.clip, "templates": list(config.templates),
          "drop_fraction": config.drop_fraction, "drop_misclassified": config.drop_misclassified,
          "min_keep_per_class": config.min_keep_per_class, "total": int(len(labels)),
          "kept": int(keep.sum()), "classes": classes}
