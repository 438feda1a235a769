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

import numpy as np

from synth_jax import files, runs
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)
SHEET = 16  # images per contact sheet (4 x 4)
POLL_S = 10.0  # how often process 0 looks for the other processes' shards
PLAN = "generate_plan.json"
# Settings that change an image's bytes. Not here: batch_size, mesh, encode_threads (the images do
# not depend on them) and attention/fsdp (kernels, not the model).
PLAN_KEYS = ("model_path", "dtype", "style_token_path", "resolution", "steps", "guidance",
             "scheduler", "scheduler_overrides", "negative_prompt", "image_format", "jpeg_quality",
             "images_per_shard")


def check_plan(config, workdir: str, names: list[str], items: list[dict],
               write: bool = True) -> dict:
  """Records what this workdir generates; a rerun with other settings is refused, not mixed in.

  Shards are kept by name on a rerun, so without this a rerun with another seed, guidance or
  prompt list would silently add differently made images beside the old ones. With write=False
  the plan is only compared; `generate` writes it once the sampler has loaded, so a setting the
  model refuses never enters the record.
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
      return plan
    keys = sorted(set(settings) | set(old.get("settings", {})))
    changed = [k for k in keys if old.get("settings", {}).get(k) != settings.get(k)]
    what = (f"settings {changed}" if changed else "images (seed, classes, prompts, "
            f"prompt_weights or images_per_class; {old.get('num_images')} -> {len(items)} images)")
    raise ConfigError(f"{workdir} was generated with different {what}; use a new --config.workdir "
                      f"(or delete {path} and the synthetic/ folder to start over)")
  if write:
    files.write_json(path, plan)
  return plan


def write_plan(workdir: str, plan: dict) -> None:
  path = os.path.join(workdir, PLAN)
  if not os.path.exists(path):
    files.write_json(path, plan)


def wait_for_shards(w, split: str, num_shards: int) -> None:
  """Blocks until every shard of `split` is recorded (multi-host: other processes write them).

  A shard's record file is written by the process that wrote the shard, atomically, after the
  shard is renamed into place, so a recorded shard is complete; nothing here guesses from file
  ages. Hashes are checked once, by `finalize`. Raises runs.Preempted on SIGTERM.
  """
  from synth_jax.data import writer
  names = [writer.shard_name(w.name, split, k, num_shards) for k in range(num_shards)]
  while True:
    missing = [n for n in names if w.shard_record(n) is None]
    if not missing:
      return
    if runs.should_stop():
      raise runs.Preempted(f"generate: SIGTERM while waiting for {len(missing)} shards of other "
                           "processes; rerun the same command to finalize")
    log.info("waiting for %d shards from other processes (first: %s)", len(missing), missing[0])
    time.sleep(POLL_S)


def contact_sheet(tiles, cols: int = 4) -> bytes:
  """PNG bytes of images (PIL, or uint8 (H, W, 3) arrays; all one size) in a grid, `cols` per
  row: generate's per-class sheets, invert's and finetune's previews, the report's and demo's
  one-row-per-class sheets."""
  from PIL import Image
  tiles = [t if isinstance(t, Image.Image) else Image.fromarray(np.asarray(t)) for t in tiles]
  w, h = tiles[0].size
  cols = min(cols, len(tiles))
  sheet = Image.new("RGB", (cols * w, math.ceil(len(tiles) / cols) * h))
  for i, tile in enumerate(tiles):
    sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
  buf = io.BytesIO()
  sheet.save(buf, format="PNG")
  return buf.getvalue()


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
    path = os.path.join(out_dir, f"contact_sheet_{files.safe_name(name)}.png")
    files.write_bytes(path, contact_sheet(tiles))
    paths.append(path)
  return paths
