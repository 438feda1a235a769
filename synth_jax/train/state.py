"""Model, optimizer and train state for one training phase.

  model, params, stats = build_model(config, num_classes, domains)
  tx = make_optimizer(config, phase_cfg, total_steps)
  state = TrainState.create(params, stats, tx, shardings=state_shardings(...))

Weight decay applies to leaves named `kernel` only (conv/dense weights), never to BatchNorm
scale/bias, biases or embeddings: the usual fine-tuning recipe (Goyal et al.; timm's no_weight_decay).
"""
from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from synth_jax import streams
from synth_jax.errors import ConfigError


@flax.struct.dataclass
class TrainState:
  """Everything a train step changes; checkpointed as one pytree."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @classmethod
  def create(cls, params, batch_stats, tx, shardings=None) -> "TrainState":
    """With `shardings` (from `state_shardings`), the state is built by one jit whose outputs
    are already placed: no device ever holds a full copy of a sharded parameter or momentum, and
    a checkpoint restored into this template lands on the same devices."""
    def make(params, batch_stats):
      return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                 opt_state=tx.init(params))
    if shardings is None:
      return make(params, batch_stats)
    return jax.jit(make, out_shardings=shardings)(params, batch_stats)


def state_shardings(params, batch_stats, tx, placement, mesh) -> TrainState:
  """A TrainState of NamedShardings: params as given, momenta as their parameter, the rest
  (step, counts, BatchNorm statistics) replicated."""
  from synth_jax import sharding
  rep = sharding.replicated(mesh)
  opt_shape = jax.eval_shape(tx.init, params)
  opt = optax.tree_map_params(tx, lambda _, s: s, opt_shape, placement,
                              transform_non_params=lambda _: rep)
  return TrainState(step=rep, params=placement,
                    batch_stats=jax.tree.map(lambda _: rep, batch_stats), opt_state=opt)


SCRATCH = "scratch"  # config.init value that asks for random weights (never the empty default)
INIT_FORMATS = {"torchvision": "from_torchvision", "timm": "from_timm", "hf": "from_hf",
                "big_vision": "from_big_vision"}


def check_init(config) -> None:
  """Transfer needs pretrained weights: an empty config.init is an error, not random weights.

  Both papers fine-tune ImageNet-pretrained models (facts.md 1.5); a run that silently starts from
  random weights finishes and reports a number that means nothing. `init=scratch` says it on purpose.
  """
  init = str(config.get("init") or "")
  if not init:
    raise ConfigError("config.init is empty: pass the pretrained weights, --config.init=PATH "
                      "(with --config.init_format=torchvision|timm|hf|big_vision), or "
                      "--config.init=scratch to train from random weights on purpose")
  if init == SCRATCH:
    return
  if config.init_format not in INIT_FORMATS:
    raise ConfigError(f"config.init_format={config.init_format!r} is unknown; use one of "
                      f"{sorted(INIT_FORMATS)}")
  if not os.path.exists(os.path.expanduser(init)):
    raise ConfigError(f"config.init={init!r} does not exist; pass the {config.init_format} "
                      "checkpoint file/folder, or --config.init=scratch for random weights")


def model_variant(config, domains=("real",)):
  """(variant, constructor kwargs) of config.model; checks the AuxBN settings (no file read)."""
  from synth_jax import models
  from synth_jax import config as config_lib
  dtype = config_lib.dtype_from(config, allowed=("float32", "bfloat16"))
  kw = {"dtype": dtype} if dtype != jnp.float32 else {}
  name = config.model
  if name.startswith("resnet:"):  # custom stage sizes, e.g. resnet:basic:1,1,1,1 (tests, smoke)
    variant = models.ResNetVariant(name[len("resnet:"):])
  elif hasattr(models, name) and isinstance(getattr(models, name),
                                             (models.ResNetVariant, models.ViTVariant)):
    variant = getattr(models, name)
  else:
    raise ConfigError(f"config.model={name!r} is unknown; use resnet18..resnet152, vit_s16, "
                      "vit_b16, vit_b32, vit_l16 or resnet:basic:1,1,1,1")
  if len(domains) > 1:  # AuxBN: per-domain statistics, and per-domain affine when asked
    kw["separate_affine"] = bool(config.auxbn_separate_affine)
    if isinstance(variant, models.ViTVariant) and not kw["separate_affine"]:
      # LayerNorm has no running statistics: without per-domain affine both domains share every
      # parameter and "auxbn" on a ViT is silently plain 50/50 mixing (paper B is silent here).
      raise ConfigError(f"method auxbn on {name} (a ViT, LayerNorm only) would equal a 50/50 mix; "
                        "pass --config.auxbn_separate_affine=true for per-domain LayerNorm affine "
                        "(ours; facts.md 2.3), or use method=mix")
  return variant, kw


def build_model(config, num_classes: int, domains=("real",), place=None):
  """config.model (+ config.init weights) -> (model, params, batch_stats).

  `place` (abstract variables -> shardings) makes a random init come out already sharded.
  """
  check_init(config)
  variant, kw = model_variant(config, domains)
  name = config.model
  if config.init == SCRATCH:
    rng = streams.key(config.seed, "model_init")
    return variant.init(rng, num_classes=num_classes, domains=domains,
                        image_size=config.augment.resolution, place=place, **kw)
  loader = getattr(variant, INIT_FORMATS[config.init_format], None)
  if loader is None:
    raise ConfigError(f"config.init_format={config.init_format!r} is not available for "
                      f"{name}; use one of {sorted(INIT_FORMATS)} that the model supports")
  init = os.path.expanduser(config.init)
  # The pretrained head has the wrong width: a fresh one (keep_head=False) of num_classes.
  return loader(init, num_classes=num_classes, domains=domains, keep_head=False, place=place, **kw)


def decay_mask(params) -> Any:
  """True for leaves that get weight decay: kernels only."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def schedule(phase_cfg, total_steps: int, batch_scale: float = 1.0) -> optax.Schedule:
  """Linear warmup to the learning rate then cosine to 0 over `total_steps` optimizer updates."""
  peak = float(phase_cfg.learning_rate) * batch_scale
  warmup = int(round(phase_cfg.warmup_fraction * total_steps))
  if warmup >= total_steps:
    return optax.constant_schedule(peak)
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), 0.0)


def make_optimizer(config, phase_cfg, total_steps: int) -> optax.GradientTransformation:
  """SGD+momentum or AdamW with warmup+cosine, decay on kernels only, optional accumulation."""
  k = max(1, int(config.grad_accum))
  sched = schedule(phase_cfg, max(1, total_steps // k))
  if config.optimizer == "sgd":
    tx = optax.chain(optax.add_decayed_weights(config.weight_decay, decay_mask),
                     optax.sgd(sched, momentum=config.momentum or None))
  elif config.optimizer == "adamw":
    tx = optax.adamw(sched, weight_decay=config.weight_decay, mask=decay_mask)
  else:
    raise ConfigError(f"config.optimizer={config.optimizer!r} is unknown; use sgd or adamw")
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k)
  return tx
