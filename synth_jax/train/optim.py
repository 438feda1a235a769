"""optax optimizers for one training stage: SGD+momentum or AdamW, cosine with warmup, weight decay
without norm/bias parameters, gradient accumulation.

  tx, schedule = make_optimizer(config.stage2, total_steps=1000)

A stage config holds `optimizer` ("sgd" | "adamw"), `lr`, `momentum`, `nesterov`, `b1`, `b2`,
`weight_decay`, `warmup_steps` or `warmup_percent`, `end_lr_factor`, `grad_clip` and `grad_accum`.
`total_steps` counts optimizer updates; with `grad_accum=k` the train step is called k times per
update (optax.MultiSteps) and the schedule still counts updates.
"""
from __future__ import annotations

from typing import Any

import jax
import optax

from synth_jax.errors import ConfigError


def decay_mask(params: Any) -> Any:
  """True for weight matrices/kernels only: BatchNorm/LayerNorm scales, biases, per-domain norm
  tables, position embeddings and class tokens are not decayed (the usual ResNet/ViT recipe)."""
  def keep(path, _):
    return getattr(path[-1], "key", None) == "kernel"
  return jax.tree_util.tree_map_with_path(keep, params)


def warmup_steps(cfg: Any, total_steps: int) -> int:
  steps, percent = cfg.get("warmup_steps"), cfg.get("warmup_percent")
  if steps is not None and percent is not None:
    raise ConfigError("set only one of warmup_steps and warmup_percent")
  if percent is not None:
    return int(round(total_steps * float(percent) / 100.0))
  return int(steps or 0)


def make_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then cosine to `end_lr_factor * lr` (or constant with schedule="constant")."""
  lr = float(cfg.lr)
  warm = min(warmup_steps(cfg, total_steps), max(total_steps - 1, 0))
  kind = cfg.get("schedule", "cosine")
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total_steps - warm, 1), alpha=float(cfg.get("end_lr_factor", 0.0)))
  else:
    raise ConfigError(f"schedule {kind!r} is unknown; use 'cosine' or 'constant'")
  if warm <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def make_optimizer(cfg: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The stage's optimizer (wrapped in MultiSteps when grad_accum > 1) and its lr schedule."""
  schedule = make_schedule(cfg, total_steps)
  wd = float(cfg.get("weight_decay", 0.0))
  name = str(cfg.get("optimizer", "sgd")).lower()
  parts = []
  if cfg.get("grad_clip"):
    parts.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
  if name == "sgd":
    # torch-style coupled weight decay (added to the gradient before momentum), masked.
    if wd:
      parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
    parts.append(optax.sgd(schedule, momentum=float(cfg.get("momentum", 0.9)) or None,
                           nesterov=bool(cfg.get("nesterov", False))))
  elif name == "adamw":
    parts.append(optax.adamw(schedule, b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)),
                             weight_decay=wd, mask=decay_mask))
  else:
    raise ConfigError(f"optimizer {name!r} is unknown; use 'sgd' or 'adamw'")
  tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
  accum = int(cfg.get("grad_accum", 1))
  if accum < 1:
    raise ConfigError(f"grad_accum={accum} must be >= 1")
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx, schedule
