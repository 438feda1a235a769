"""`synth-jax generate`: prompts -> a labelled, tfds-readable synthetic dataset, resumable.

    synth-jax generate --config configs/generate/base.py:model=/models/sd15,classes=cars.txt \
        --config.workdir=runs/gen/cars

Reads `prompts.json` (config.prompts_path, the prompts stage's artifact) or, without it, class
names + a template. Image i of class c gets its seed and its prompt from (config.seed, c, i) only,
so the dataset is the same on 1 or 64 devices, in one run or after any number of interruptions.
Images go into shards of `images_per_shard` in class-major order; a shard is written to a temp
name and renamed when complete (`data.writer`), so a rerun skips complete shards and redoes the
partial one, never duplicating an image. Process p of P writes shards p, p+P, ...; process 0
finalizes the dataset (`<workdir>/synthetic/1.0.0`) and writes one contact sheet per class.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from synth_jax import faults, runs, streams
from synth_jax.diffusion import generate_finish as finish
from synth_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SPLIT = "train"
SCHEDULERS = ("dpm++2m", "ddim", "euler")


def validate(config) -> None:
  """Every config mistake is found here, before any model is loaded or anything is written."""
  from synth_jax import checks
  from synth_jax.checks import Bool, Int, Float, OneOf, Text
  checks.check(config, {
      "images_per_class": Int(1, 10**6, 100), "resolution": Int(0, 4096, 512),
      "steps": Int(1, 1000, 25), "guidance": Float(example=7.5), "batch_size": Int(1, 4096, 16),
      "images_per_shard": Int(1, 10**6, 256), "jpeg_quality": Int(example=95),
      "encode_threads": Int(0, 256, 0), "seed": Int(0, 2**32 - 1, 0),
      "dtype": OneOf(checks.DTYPES, "bfloat16"), "scheduler": OneOf(SCHEDULERS, "ddim"),
      "attention": OneOf(("auto", "xla", "cudnn"), "auto"), "fsdp": Bool(),
      "template": Text(example="'a photo of a {}'"),
      "negative_prompt": Text(), "model_path": Text(), "single_file_config": Text(),
      "prompts_path": Text(), "style_token_path": Text()})  # paths: named where they are read
  for key in ("classes",):
    v = config.get(key)
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
      raise checks.bad(key, v, "is not a list of class names", "\"['cat', 'dog']\"")
  names = config.get("class_names")
  if not isinstance(names, (str, list, tuple)) or (
      not isinstance(names, str) and not all(isinstance(x, str) for x in names)):
    raise checks.bad("class_names", names, "is not a text file or a list of names", "cat,dog")
  if not hasattr(config.get("scheduler_overrides"), "items"):
    raise checks.bad("scheduler_overrides", config.get("scheduler_overrides"), "is not a dict",
                     "\"{'timestep_spacing': 'trailing'}\"")
  from synth_jax.diffusion import sampler as sampler_lib
  import jax.numpy as jnp
  sampler_lib.attention_impl_for(jnp.dtype(config.dtype), config.attention)
  n = int(config.images_per_class)
  if n <= 0:
    raise ConfigError(f"images_per_class={n} must be >= 1; pass e.g. --config.images_per_class=100")
  res = int(config.get("resolution") or 0)
  if res and res % 8:
    raise ConfigError(f"resolution={res} is not divisible by 8 (the VAE's downscale); use e.g. "
                      f"{max(8, res // 8 * 8)} or {res // 8 * 8 + 8}")
  g = float(config.guidance)
  if not 0.0 <= g <= 50.0:
    raise ConfigError(f"guidance={g} is outside [0, 50]; Stable Diffusion is usually run at 5-10")
  if int(config.steps) < 1:
    raise ConfigError(f"steps={config.steps} must be >= 1; pass e.g. --config.steps=25")
  if int(config.batch_size) < 1:
    raise ConfigError(f"batch_size={config.batch_size} must be >= 1")
  weights = config.get("prompt_weights")
  if weights is not None:
    from synth_jax.prompts import diversify
    if not hasattr(weights, "items") or set(weights) - set(diversify.KINDS):
      # dict(): a ConfigDict's repr spans lines
      shown = dict(weights) if hasattr(weights, "items") else weights
      raise ConfigError(f"prompt_weights={shown!r} must be a dict over {list(diversify.KINDS)}; "
                        "e.g. --config.prompt_weights=\"{'cd': 1, 'sd': 1}\"")
  if config.image_format not in ("png", "jpeg"):
    raise ConfigError(f"image_format={config.image_format!r} is not png or jpeg; png is lossless, "
                      "jpeg (with jpeg_quality) is ~5x smaller")
  if not 1 <= int(config.jpeg_quality) <= 100:
    raise ConfigError(f"jpeg_quality={config.jpeg_quality} is outside 1..100; e.g. 95")
  if int(config.images_per_shard) < 1:
    raise ConfigError(f"images_per_shard={config.images_per_shard} must be >= 1")
  # The sampler's mesh spans this process's devices only (no cross-host lockstep; see sampler.py),
  # so the batch must split over the local data-parallel devices. Checked here, before the model
  # loads, with the same mesh the sampler will build.
  import jax
  from synth_jax import sharding
  mesh = sharding.make_mesh(config.get("mesh"), devices=jax.local_devices())
  sharding.check_batch(mesh, int(config.batch_size))


# ---- what to generate ---------------------------------------------------------------------------
@dataclasses.dataclass
class ClassList:
  """What to generate: classes [{id, name, prompts: [{text, kind}]}] and the label names."""
  classes: list[dict]
  names: list[str]  # ClassLabel names, index = label id (all classes, also under config.classes)
  weights: dict | None = None  # the kind weights prompts.json's stage recorded, if any


def load_classes(config) -> ClassList:
  """From prompts.json (config.prompts_path), or class_names + template."""
  path = config.get("prompts_path") or ""
  if path:
    return _from_prompts_json(path)
  names = config.get("class_names") or []
  if isinstance(names, str):
    if os.path.isfile(names):
      with open(names) as f:
        names = [line.strip() for line in f if line.strip()]
    elif "," in names:  # --config.class_names=cat,dog,bird
      names = [n.strip() for n in names.split(",") if n.strip()]
    else:
      raise ConfigError(f"class_names={names!r} is neither a text file (one class per line) nor "
                        "a comma-separated list; check the path")
  names = list(names)
  if not names:
    raise ConfigError("no classes: pass --config.prompts_path=prompts.json or "
                      "--config.class_names=classes.txt (one per line)")
  from synth_jax.prompts import templates  # readable words for ids ("n01440764" -> "tench")
  template = str(config.template)
  if "{}" not in template:
    raise ConfigError(f"template={template!r} has no '{{}}' for the class name; "
                      "e.g. 'a photo of a {}'")
  try:
    prompts = [template.format(templates.readable(n)) for n in names]
  except (IndexError, KeyError, ValueError):
    raise ConfigError(f"template={template!r} must hold exactly one '{{}}' (use '{{{{' and '}}}}' "
                      "for literal braces); e.g. 'a photo of a {}'") from None
  if len(set(names)) != len(names):
    dup = next(n for n in names if names.count(n) > 1)
    raise ConfigError(f"class name {dup!r} is given twice in class_names; each class once")
  return ClassList([{"id": i, "name": n, "prompts": [{"text": p, "kind": "template"}]}
                    for i, (n, p) in enumerate(zip(names, prompts))], names)


def _from_prompts_json(path: str) -> ClassList:
  from synth_jax.prompts import artifact
  if os.path.isdir(path):
    raise ConfigError(f"prompts_path={path!r} is a folder; pass the prompts.json file in it")
  if not os.path.isfile(path):
    raise ConfigError(f"prompts_path={path!r} does not exist; run `synth-jax prompts` first or "
                      "pass --config.prompts_path=''")
  data = artifact.read(path)
  try:
    return _classes_of(path, data)
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # a hand-edited file
    raise DataError(f"{path} is not a valid prompts.json ({type(e).__name__}: {e}); each class "
                    "needs {'id': int, 'name': str, 'prompts': [{'text': str, 'kind': str}]}; "
                    "regenerate it with `synth-jax prompts`") from None


def _classes_of(path: str, data: dict) -> ClassList:
  meta = data.get("meta") or {}
  if meta.get("complete") is False:  # the prompts stage writes class by class
    raise DataError(f"{path} is incomplete ({len(data['classes'])} classes written); rerun "
                    "`synth-jax prompts` with the same config to finish it")
  classes = []
  for i, c in enumerate(data["classes"]):
    prompts = [p for p in c.get("prompts", []) if p.get("text")]
    if not all(isinstance(p["text"], str) for p in prompts):
      raise TypeError(f"class {c.get('name')!r} has a prompt text that is not a string")
    if not prompts:
      raise DataError(f"class {c.get('name')!r} in {path} has no prompts; rerun the prompts stage")
    if not isinstance(c["name"], str):
      raise TypeError(f"class name {c['name']!r} is not a string")
    classes.append({"id": int(c.get("id", i)), "name": c["name"], "prompts": prompts})
  # A prompts run over a class subset keeps the dataset's ids: label names come from meta.
  names = list(meta.get("class_names") or [c["name"] for c in classes])
  bad = [c for c in classes if not (0 <= c["id"] < len(names) and names[c["id"]] == c["name"])]
  if bad:
    raise DataError(f"class {bad[0]['name']!r} has id {bad[0]['id']} in {path}, which does not "
                    "match meta.class_names / the class order; regenerate it with `synth-jax "
                    "prompts`")
  return ClassList(classes, names, dict(meta["weights"]) if meta.get("weights") else None)


def selected(class_list: ClassList, subset: Sequence[str] | None) -> list[dict]:
  """The classes to generate: all, or those named in config.classes (in that order)."""
  classes = class_list.classes
  if not subset:
    return classes
  by_name = {c["name"]: c for c in classes}
  unknown = [s for s in subset if s not in by_name]
  if unknown:
    import difflib
    hint = {u: difflib.get_close_matches(u, list(by_name), 3) for u in unknown}
    raise ConfigError(f"unknown class name(s) {unknown} in config.classes; close matches: {hint}")
  return [by_name[s] for s in subset]


def item_seed(seed: int, class_id: int, index: int) -> int:
  """The uint32 noise seed of image `index` of class `class_id`."""
  return streams.int_seed(seed, "image_noise", class_id, index)


def pick_prompt(prompts: list[dict], weights: dict, seed: int, class_id: int, index: int,
                class_name: str = "") -> dict:
  """The prompt of image `index` of class `class_id`: a kind by its weight, then one of its prompts.

  Weights are per kind, not per prompt, so 80 templates and 8 CD prompts at {'template': 1,
  'cd': 1} give half the images each; kinds missing from non-empty weights get 0. The draw is
  the prompts stage's (`prompts.diversify.pick_prompt`, one definition) and depends on (seed,
  class_id, index) only.
  """
  from synth_jax.prompts import diversify
  entry = {"name": class_name or str(class_id), "prompts": prompts}
  return diversify.pick_prompt(entry, seed, class_id, index, weights)


def plan_items(config, classes: list[dict], recorded_weights: dict | None = None) -> list[dict]:
  """One dict per image (label, class_name, index, prompt, kind, seed), class-major.

  Kind weights: config.prompt_weights, else `recorded_weights` (prompts.json's), else uniform.
  """
  weights = config.get("prompt_weights")
  weights = dict(recorded_weights or {}) if weights is None else dict(weights)
  items = []
  for c in classes:
    for i in range(int(config.images_per_class)):
      p = pick_prompt(c["prompts"], weights, config.seed, c["id"], i, c["name"])
      items.append({"label": c["id"], "class_name": c["name"], "index": i, "prompt": p["text"],
                    "kind": p.get("kind", "template"), "seed": item_seed(config.seed, c["id"], i)})
  if not config.get("style_token_path"):
    dsi = next((it for it in items if it["kind"] == "dsi"), None)
    if dsi:  # without the learned embedding the token is just split into sub-words
      raise ConfigError(f"prompt {dsi['prompt']!r} is a DSI prompt but style_token_path is empty; "
                        "pass --config.style_token_path=.../learned_embeds.safetensors or "
                        "prompt_weights without 'dsi'")
  return items


# ---- the job ------------------------------------------------------------------------------------
def _default_sampler(config):
  from synth_jax.diffusion import sampler
  return sampler.Sampler.from_config(config)


def _features(names: list[str], image_format: str = "png"):
  from synth_jax.data import writer
  return writer.image_features(names, image_format,
                               extras={"class_name": "text", "prompt": "text", "seed": "int64"})


def dataset_dir(config) -> str:
  from synth_jax.data import writer
  return os.path.join(runs.workdir(config), "synthetic", writer.VERSION)


def _render(sampler, config, items: list[dict], pool, bar) -> list[bytes]:
  """Encoded images for `items`, in batches of the sampler's size (the last padded by repetition).

  Each batch is PNG/JPEG-encoded on `pool` while the sampler works on the next one: encoding a
  512 px PNG takes ~50-100 ms of CPU, as long as a fast accelerator takes to sample it.
  """
  from synth_jax.data import writer
  fmt, quality = str(config.image_format), int(config.jpeg_quality)
  b = sampler.batch_size
  out = []
  for start in range(0, len(items), b):
    if runs.should_stop():
      raise runs.Preempted("generate: SIGTERM received; complete shards are kept, rerun the same "
                           "command to continue")
    chunk = items[start:start + b]
    padded = chunk + [chunk[-1]] * (b - len(chunk))
    images = sampler([it["prompt"] for it in padded], [str(config.negative_prompt)] * b,
                     np.array([it["seed"] for it in padded], np.uint32), float(config.guidance))
    images = np.asarray(images)[:len(chunk)]
    out.extend(pool.submit(writer.encode_image, im, fmt, quality) for im in images)
    bar.update(len(chunk))  # sampled; a shard counts as kept only once written
    faults.point("generate_batch")
  return [f.result() for f in out]


def generate(config, sampler_factory: Callable[[Any], Any] | None = None) -> str:
  """Writes (or completes) the synthetic dataset; returns its directory."""
  import jax
  from synth_jax.data import writer as writer_lib
  validate(config)
  if sampler_factory is None and not os.path.exists(os.path.expanduser(config.model_path or "")):
    from synth_jax.errors import WeightsError  # before anything is written
    raise WeightsError(f"pipeline folder {config.model_path!r} does not exist; pass a diffusers "
                       "Stable Diffusion folder (or a single-file checkpoint): "
                       "--config.model_path=/path/to/sd")
  workdir = runs.workdir(config)
  class_list = load_classes(config)
  items = plan_items(config, selected(class_list, list(config.get("classes") or [])),
                     class_list.weights)
  per_shard = int(config.images_per_shard)
  num_shards = math.ceil(len(items) / per_shard)
  plan = finish.check_plan(config, workdir, class_list.names, items, write=False)
  features = _features(class_list.names, config.image_format)
  w = writer_lib.DatasetWriter(workdir, "synthetic", features,
                               jpeg_quality=int(config.jpeg_quality),
                               description="synthetic images from synth-jax generate")
  if os.path.exists(os.path.join(w.dataset_dir, "dataset_info.json")):
    log.info("%s is complete: nothing to generate", w.dataset_dir)
    return w.dataset_dir
  pid, procs = jax.process_index(), jax.process_count()
  mine = [k for k in range(pid, num_shards, procs)]
  todo = [k for k in mine if not w.shard_complete(SPLIT, k, num_shards)]
  done_images = sum(len(items[k * per_shard:(k + 1) * per_shard]) for k in mine if k not in todo)
  total = sum(len(items[k * per_shard:(k + 1) * per_shard]) for k in mine)
  log.info("generate: %d images in %d shards (%d to write here), %d classes", len(items),
           num_shards, len(todo), len(class_list.names))
  sampler = (sampler_factory or _default_sampler)(config) if todo else None
  tokenizer = getattr(getattr(sampler, "pipe", None), "tokenizer", None)
  if tokenizer is not None:  # before any image: a DSI token that does nothing is an error
    from synth_jax.diffusion import token_check
    token_check.check_prompt_tokens([it["prompt"] for it in items], tokenizer,
                                    token_check.loaded_tokens(config.get("style_token_path") or ""))
  finish.write_plan(workdir, plan)  # after the model and its tokenizer accepted the settings
  if todo:
    from concurrent.futures import ThreadPoolExecutor
    bar = runs.progress(total=total, initial=done_images, desc="generate", unit="img")
    threads = int(config.encode_threads or 0) or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads, thread_name_prefix="encode") as pool:
      for k in todo:
        part = items[k * per_shard:(k + 1) * per_shard]
        images = _render(sampler, config, part, pool, bar)
        w.write_shard(SPLIT, k, num_shards, (
            {"image": im, "label": it["label"], "class_name": it["class_name"],
             "prompt": it["prompt"], "seed": it["seed"]} for im, it in zip(images, part)))
        faults.point("generate_shard")
    bar.close()
  if pid != 0:
    return w.dataset_dir
  if procs > 1:
    finish.wait_for_shards(w, SPLIT, num_shards)
  meta = {k: config.get(k) for k in ("model_path", "steps", "guidance", "scheduler", "resolution",
                                     "negative_prompt", "seed", "style_token_path")}
  path = w.finalize([SPLIT], metadata={"generator": json.loads(json.dumps(meta, default=str))})
  finish.write_contact_sheets(path, workdir, items, SPLIT)
  return path
