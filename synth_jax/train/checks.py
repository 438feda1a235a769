"""`train`'s config validation (checks.VALIDATORS["train"]): every field, before any data or jit.

`values(config)` checks ranges, enums and cross-field rules without touching the disk (the demo
and the sweep check their sub-configs with it before anything runs); `validate(config)` adds the
paths, the mesh and the batch.
"""
from __future__ import annotations

import os
import re

from synth_jax import checks
from synth_jax.checks import BIG, Bool, Float, Int, OneOf, Text
from synth_jax.errors import ConfigError

METHODS = ("vanilla", "mix", "synthetic_only", "bridged", "bridged++", "bridged_plain", "bridged_fc",
           "auxbn")
INIT_FORMATS = ("torchvision", "timm", "hf", "big_vision")
_PHASE = {"steps": Int(0, BIG, 100, none_ok=True), "epochs": Float(0, 10**6, 30, none_ok=True),
          "examples": Int(0, 10**15, 100000, none_ok=True),
          "learning_rate": Float(0, 100, 0.01, lo_open=True), "warmup_fraction": Float(0, 1, 0.05),
          "mixup_alpha": Float(0, 100, 0.2, none_ok=True), "cutmix_alpha": Float(0, 100, 1.0),
          "min_steps": Int(0, BIG, 500)}
RULES = {
    "method": OneOf(METHODS, "vanilla"), "seed": Int(0, 2**32 - 1, 0),
    "dataset": Text(True, "digits"), "data_dir": Text(), "manual_dir": Text(),
    "train_split": Text(), "test_split": Text(), "synthetic": Text(),
    "volume": Int(-1, BIG, 500), "shots": Int(-1, BIG, 10), "mix_ratio": Float(0, 1, 0.5),
    "auxbn_synthetic_fraction": Float(0, 1, 0.5, lo_open=True),
    "batch_size": Int(1, 2**20, 256), "eval_batch_size": Int(1, 2**20, 256),
    "workers": Int(0, 1024, 0),
    "augment.resolution": Int(8, 4096, 224), "augment.flip": Bool(),
    "augment.min_scale": Float(0, 1, 0.08, lo_open=True), "augment.color_jitter": Float(0, 1, 0.4),
    "augment.randaugment_ops": Int(0, 16, 2), "augment.randaugment_magnitude": Float(0, 30, 9),
    "augment.crop_pct": Float(0, 1, 0.875, lo_open=True), "augment.uint8": Bool(),
    "model": Text(True, "resnet50"), "init": Text(), "init_format": OneOf(INIT_FORMATS, "timm"),
    "dtype": OneOf(("float32", "bfloat16"), "bfloat16"), "fsdp": Bool(), "tensorboard": Bool(),
    "optimizer": OneOf(("sgd", "adamw"), "sgd"), "momentum": Float(0, 1, 0.9),
    "weight_decay": Float(0, 10, 5e-4), "label_smoothing": Float(0, 0.999, 0.1),
    "grad_accum": Int(1, 4096, 1), "reinit_head": Bool(none_ok=True),
    **{f"phase{i}.{k}": r for i in (1, 2) for k, r in _PHASE.items()},
    "log_every": Int(1, BIG, 50), "eval_every": Int(0, BIG, 0),
    "checkpoint_every": Int(1, BIG, 500), "keep_checkpoints": Int(1, 1000, 2),
    "auxbn_separate_affine": Bool(), "batch_cap_by_data": Bool(), "epochs_in_real_images": Bool(),
    "bn_recalibrate_images": Int(0, BIG, 10000),
}
_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vit_s16", "vit_b16",
           "vit_b32", "vit_l16")


def values(config) -> None:
  """Ranges, enums and cross-field rules; reads nothing from disk."""
  checks.check(config, RULES)
  for key in ("volume", "shots"):
    if config.get(key) == 0:
      raise checks.bad(key, 0, "selects nothing; use -1 for all or k >= 1", 10)
  model = config.model
  if not (model in _MODELS or re.fullmatch(r"resnet:(basic|bottleneck):([1-9]\d?)(,[1-9]\d?){0,7}",
                                           model)):
    from synth_jax import models
    if not isinstance(getattr(models, model, None), (models.ResNetVariant, models.ViTVariant)):
      raise ConfigError(f"config.model={model!r} is unknown; use resnet18..resnet152, vit_s16, "
                        "vit_b16, vit_b32, vit_l16 or resnet:basic:1,1,1,1")
  for p in ("phase1", "phase2"):
    if p not in config:
      continue
    if not any((config[p].get(u) or 0) > 0 for u in ("steps", "examples", "epochs")):
      if p == "phase2" or config.method.startswith("bridged"):
        raise checks.bad(f"{p}.steps", config[p].get("steps"),
                         f"is not set and neither are {p}.examples/{p}.epochs (> 0)", 100)
  n_syn = round(config.batch_size * config.auxbn_synthetic_fraction)
  if config.method == "auxbn" and not 0 < n_syn < config.batch_size:
    raise ConfigError(f"auxbn_synthetic_fraction={config.auxbn_synthetic_fraction} of "
                      f"batch_size={config.batch_size} leaves a domain with no images; use 0.5")
  if config.method != "vanilla" and not config.synthetic:
    raise ConfigError(f"method {config.method!r} needs synthetic images; pass "
                      "--config.synthetic=DIR (the generate stage's dataset)")


def validate(config) -> None:
  """Everything `train` refuses, before the run directory is created."""
  from synth_jax import runs, sharding
  from synth_jax.train import state as state_lib
  values(config)
  run_dir = runs.workdir(config)
  for key in ("dataset", "synthetic") if config.method != "vanilla" else ("dataset",):
    path = os.path.expanduser(str(config.get(key) or ""))
    if path and os.path.isdir(path):
      checks.not_inside_input(run_dir, key, path)
    elif key == "synthetic" and path:
      raise checks.bad(key, config.synthetic, "does not exist", "runs/gen/cars/synthetic/1.0.0")
  if not os.path.isdir(os.path.expanduser(config.dataset)):
    from synth_jax.data import registry
    registry.get(config.dataset)  # an unknown name is a DataError listing the known ones
  state_lib.check_init(config)
  mesh = sharding.make_mesh(config.get("mesh"))
  sharding.check_batch(mesh, config.batch_size)
  sharding.check_batch(mesh, config.eval_batch_size, "eval_batch_size")
