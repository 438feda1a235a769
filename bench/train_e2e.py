"""End-to-end training throughput: the real grain input pipeline vs synthetic on-device input.

Same process, same model, same jitted train step (synth_jax.train.steps.make_train_step, state
donated, uint8 images normalised on device), timed back to back after warm-up:
  synthetic  one batch already on the device mesh, reused every step (the step's ceiling)
  pipeline   grain make_train_dataset (decode + random-resized-crop + flip, `--workers` processes)
             -> sharding.shard_batch -> step, as the trainer does
  host_only  the pipeline iterated alone (batches/s the host can feed), for diagnosis
Prints one JSON object; `pipeline_overhead` = 1 - pipeline/synthetic img/s (target <= 0.10).

  python bench/train_e2e.py --batch 256 --resolution 224 --workers 16 --steps 50     # accelerator
  python bench/train_e2e.py --batch 16 --resolution 64 --steps 4 --workers 0        # CPU smoke

The data is scikit-learn digits upscaled to --source-size px and stored as PNG (no downloads), so
decoding is real work; pass --dataset DIR for a real tfds/ArrayRecord dataset instead.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="resnet50", help="resnet18/50/... or resnet:basic:1,1,1,1")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--resolution", type=int, default=224)
  p.add_argument("--steps", type=int, default=50, help="timed steps per mode")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  p.add_argument("--dataset", default="", help="tfds dataset dir (default: digits written to a temp dir)")
  p.add_argument("--source-size", type=int, default=256, help="stored image size of the digits set")
  p.add_argument("--bf16", action="store_true")
  return p.parse_args()


def _model(name, num_classes, dtype):
  from synth_jax import models
  table = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50,
           "resnet101": models.resnet101}
  variant = models.ResNetVariant(name.split(":", 1)[1]) if name.startswith("resnet:") else table[name]
  return variant(num_classes=num_classes, dtype=dtype)


def _time(fn, steps):
  t = time.perf_counter()
  out = None
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return time.perf_counter() - t


def main():
  a = _args()
  from synth_jax import sharding
  from synth_jax.data import digits, pipeline, sources
  from synth_jax.train import steps as steps_lib
  from synth_jax.train import state as state_lib
  from synth_jax.train.state import TrainState

  tmp = None
  if not a.dataset:
    tmp = tempfile.mkdtemp(prefix="train_e2e_")
    a.dataset = digits.write_digits(tmp, name=f"digits{a.source_size}", size=a.source_size)
  split = sources.open_split(a.dataset, "train")
  num_classes = len(split.class_names)
  mesh = sharding.make_mesh()
  sharding.check_batch(mesh, a.batch)
  dtype = jnp.bfloat16 if a.bf16 else jnp.float32
  model = _model(a.model, num_classes, dtype)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, a.resolution, a.resolution, 3)))
  tx = optax.sgd(0.01, momentum=0.9)
  rep = sharding.replicated(mesh)
  params, stats = jax.device_put(variables["params"], rep), jax.device_put(variables["batch_stats"], rep)
  state = TrainState.create(params, stats, tx, state_lib.state_shardings(
      params, stats, tx, jax.tree.map(lambda _: rep, params), mesh))
  step = steps_lib.make_train_step(model, tx, num_classes, label_smoothing=0.1, dtype=dtype)
  rng = jax.random.key(1)

  ds = pipeline.make_train_dataset(split, a.batch, seed=0, resolution=a.resolution,
                                   augment={"uint8": True, "min_scale": 0.08}, workers=a.workers)
  it = iter(ds)
  fake = sharding.shard_batch({"image": np.random.default_rng(0).integers(
      0, 256, (a.batch, a.resolution, a.resolution, 3), dtype=np.uint8),
      "label": np.zeros((a.batch,), np.int32)}, mesh)

  holder = {"state": state}

  def run(batch):
    holder["state"], m = step(holder["state"], batch, rng)
    return m["loss"]

  t0 = time.perf_counter()
  for _ in range(a.warmup):  # compile + fill the pipeline's workers and prefetch buffer
    run(sharding.shard_batch(next(it), mesh))
    run(fake)  # both inputs through the same executable (a differing input would recompile here)
  jax.block_until_ready(holder["state"].params)
  warm_s = time.perf_counter() - t0
  compiles = step._cache_size()
  synthetic_s = _time(lambda: run(fake), a.steps)
  pipeline_s = _time(lambda: run(sharding.shard_batch(next(it), mesh)), a.steps)
  assert step._cache_size() == compiles, "a timed step recompiled; the comparison would be unfair"
  fresh = iter(ds)  # host alone, from a cold iterator (the warm one's prefetch buffer is full)
  host_s = _time(lambda: next(fresh)["label"], a.steps)
  it.close()  # stop the worker processes (and free their shared memory) before reporting
  fresh.close()
  syn_ips, pipe_ips = a.batch * a.steps / synthetic_s, a.batch * a.steps / pipeline_s
  out = {
      "bench": "train_e2e", "model": a.model, "batch": a.batch, "resolution": a.resolution,
      "steps": a.steps, "workers": a.workers, "dtype": "bf16" if a.bf16 else "fp32",
      "synthetic_img_per_s": round(syn_ips, 2), "pipeline_img_per_s": round(pipe_ips, 2),
      "host_only_img_per_s": round(a.batch * a.steps / host_s, 2),
      "pipeline_overhead": round(1.0 - pipe_ips / syn_ips, 4),
      "pipeline_overhead_ok": bool(1.0 - pipe_ips / syn_ips <= 0.10),
      "warmup_s": round(warm_s, 2), "devices": [str(d) for d in jax.devices()][:4],
      "num_devices": jax.device_count(), "host_cpus": os.cpu_count(), "platform": platform.platform(),
      "dataset": a.dataset if tmp is None else f"digits upscaled to {a.source_size}px PNG",
  }
  print(json.dumps(out))


if __name__ == "__main__":
  main()
