"""The generate job's bookkeeping: the plan check on (re)start, and process 0's wait, repair and
contact sheets after the shards."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time

from synth_jax import files, runs
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)
SHEET = 16  # images per contact sheet (4 x 4)
POLL_S = 10.0  # how often process 0 looks for the other processes' shards
STALE_S = 60.0  # an unrecorded shard file this old lost its manifest entry (see wait_for_shards)
PLAN = "generate_plan.json"
# Settings that change an image's bytes. Not here: batch_size, mesh, encode_threads (the images do
# not depend on them) and attention/fsdp (kernels, not the model).
PLAN_KEYS = ("model_path", "dtype", "style_token_path", "resolution", "steps", "guidance",
             "scheduler", "scheduler_overrides", "negative_prompt", "image_format", "jpeg_quality",
             "images_per_shard")


def check_plan(config, workdir: str, names: list[str], items: list[dict]) -> None:
  """Records what this workdir generates; a rerun with other settings is refused, not mixed in.

  Shards are kept by name on a rerun, so without this a rerun with another seed, guidance or
  prompt list would silently add differently made images beside the old ones.
  """
  settings = {k: config.get(k) for k in PLAN_KEYS}
  from synth_jax.diffusion import hub
  for k in ("model_path", "style_token_path"):  # the same folder named from another cwd
    if settings[k] and not hub.is_hub_id(settings[k]):  # a Hub id is the same from any cwd
      settings[k] = os.path.abspath(os.path.expanduser(settings[k]))
    settings[k] = settings[k] or ""
  for k in ("model_revision", "model_variant", "lora"):  # recorded only when set (older plans match)
    if config.get(k):
      settings[k] = config.get(k)
  if config.get("single_file_config"):  # recorded only when set, so older plans still match
    settings["single_file_config"] = os.path.abspath(os.path.expanduser(config.single_file_config))
  settings = json.loads(json.dumps(settings, default=lambda v: v.to_dict() if hasattr(
      v, "to_dict") else str(v), sort_keys=True))
  blob = json.dumps([names, [(it["label"], it["prompt"], it["seed"]) for it in items]])
  plan = {"settings": settings, "num_images": len(items),
          "images_sha256": hashlib.sha256(blob.encode()).hexdigest()}
  path = os.path.join(workdir, PLAN)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old == plan:
      return
    keys = sorted(set(settings) | set(old.get("settings", {})))
    changed = [k for k in keys if old.get("settings", {}).get(k) != settings.get(k)]
    what = (f"settings {changed}" if changed else "images (seed, classes, prompts, "
            f"prompt_weights or images_per_class; {old.get('num_images')} -> {len(items)} images)")
    raise ConfigError(f"{workdir} was generated with different {what}; use a new --config.workdir "
                      f"(or delete {path} and the synthetic/ folder to start over)")
  files.write_json(path, plan)


def wait_for_shards(w, split: str, num_shards: int) -> None:
  """Blocks until manifest.json lists every shard of `split` (multi-host: others write them).

  Reads only the manifest (hashes are checked once, by `finalize`). Processes sharing one dataset
  directory rewrite manifest.json whole and can drop each other's entries (writer.py), which would
  leave this loop waiting forever; but a shard at its final name is complete (renamed only after
  it is written, and its bytes are deterministic), so one left unrecorded for STALE_S is recorded
  here. Raises runs.Preempted on SIGTERM.
  """
  from synth_jax.data import writer
  names = [writer.shard_name(w.name, split, k, num_shards) for k in range(num_shards)]
  while True:
    recorded = files.read_manifest(w.dataset_dir)
    for name in (n for n in names if n not in recorded):
      path = os.path.join(w.dataset_dir, name)
      if os.path.exists(path) and time.time() - os.path.getmtime(path) > STALE_S:
        log.warning("%s is complete but not in manifest.json (concurrent write); recording it",
                    name)
        files.record_file(w.dataset_dir, name)
    missing = [n for n in names if n not in files.read_manifest(w.dataset_dir)]
    if not missing:
      return
    if runs.should_stop():
      raise runs.Preempted(f"generate: SIGTERM while waiting for {len(missing)} shards of other "
                           "processes; rerun the same command to finalize")
    log.info("waiting for %d shards from other processes (first: %s)", len(missing), missing[0])
    time.sleep(POLL_S)


def write_contact_sheets(dataset: str, out_dir: str, items: list[dict],
                         split: str = "train") -> list[str]:
  """contact_sheet_<class>.png: the first 16 images of each class, 4 per row."""
  from PIL import Image
  from synth_jax.data import sources
  split = sources.open_split(dataset, split)
  first: dict[str, list[int]] = {}
  for pos, it in enumerate(items):
    first.setdefault(it["class_name"], [])
    if len(first[it["class_name"]]) < SHEET:
      first[it["class_name"]].append(pos)
  paths = []
  for name, positions in first.items():
    tiles = [Image.open(io.BytesIO(split.source[p]["image"])).convert("RGB") for p in positions]
    w, h = tiles[0].size
    cols = min(4, len(tiles))
    sheet = Image.new("RGB", (cols * w, math.ceil(len(tiles) / cols) * h))
    for i, tile in enumerate(tiles):
      sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    path = os.path.join(out_dir, f"contact_sheet_{safe}.png")
    files.write_bytes(path, buf.getvalue())
    paths.append(path)
  return paths
