"""config.model -> (model, params, batch_stats): random init or pretrained weights.

  config.model.name     "resnet18" | "resnet34" | "resnet50" | "resnet101" | "vit_s16" | "vit_b16" |
                        "vit_l16" | "resnet:basic:1,1,1,1" (any ResNet stage spec, for tests/demo)
  config.model.init     "" (random) or a weights path (file or folder)
  config.model.source   "torchvision" | "timm" | "hf" | "big_vision" (how to read `init`)
  config.model.dtype    "float32" | "bfloat16" (compute dtype; parameters stay float32)

A pretrained head of another width is replaced (keep_head=False when num_classes differs), which
is how every method starts: ImageNet features, a fresh head for the target classes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from synth_jax.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16, "fp32": jnp.float32}


def compute_dtype(model_cfg):
  name = str(model_cfg.get("dtype", "float32"))
  if name not in DTYPES:
    raise ConfigError(f"model.dtype {name!r} is unknown; use float32 or bfloat16")
  return DTYPES[name]


def _family(name: str):
  from synth_jax import models
  name = name.lower()
  if name.startswith("resnet:"):
    return "resnet", models.ResNetVariant(name.split(":", 1)[1])
  table = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50,
           "resnet101": models.resnet101, "resnet152": models.resnet152, "vit_s16": models.vit_s16,
           "vit_b16": models.vit_b16, "vit_l16": models.vit_l16, "vit_b32": models.vit_b32}
  if name not in table:
    raise ConfigError(f"model.name {name!r} is unknown; use one of {', '.join(table)} or "
                      "'resnet:basic:1,1,1,1'")
  return ("vit" if name.startswith("vit") else "resnet"), table[name]


def build_model(model_cfg, num_classes: int, domains=("real",)):
  """The Flax module only (no weights): for eval_shape and for the restore path."""
  family, variant = _family(str(model_cfg.name))
  kw = {"num_classes": num_classes, "domains": tuple(domains), "dtype": compute_dtype(model_cfg)}
  if family == "resnet":
    kw["zero_init_residual"] = bool(model_cfg.get("zero_init_residual", False))
  return variant(**kw)


def load_model(model_cfg, num_classes: int, domains, image_size: int, rng):
  """(model, params, batch_stats) from config.model.init, or random when it is empty."""
  model = build_model(model_cfg, num_classes, domains)
  path = str(model_cfg.get("init", "") or "")
  if not path:
    variables = jax.jit(model.init)(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32))
    return model, variables["params"], variables.get("batch_stats", {})
  family, variant = _family(str(model_cfg.name))
  source = str(model_cfg.get("source", "torchvision"))
  kw = dict(num_classes=num_classes, domains=tuple(domains), keep_head=None)
  extra = {"dtype": compute_dtype(model_cfg)}
  if family == "resnet":
    loaders = {"torchvision": variant.from_torchvision, "timm": variant.from_torchvision,
               "hf": variant.from_hf}
    extra["zero_init_residual"] = bool(model_cfg.get("zero_init_residual", False))
  else:
    loaders = {"timm": variant.from_timm, "hf": variant.from_hf, "big_vision": variant.from_big_vision}
    kw["image_size"] = image_size
  if source not in loaders:
    raise ConfigError(f"model.source {source!r} cannot load {model_cfg.name}; use one of {', '.join(loaders)}")
  model, params, stats = loaders[source](path, **kw, **extra)
  return model, params, stats
