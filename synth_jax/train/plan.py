"""`synth-jax plan`: compile a stage's step for its config's shapes and say what it costs.

    synth-jax plan --config configs/generate/base.py:model=sd15 --devices 8 --chip v5e
    synth-jax plan --config configs/train/base.py:model=resnet50,init=scratch --chip h100

Nothing runs and no weights load: parameters are `jax.eval_shape` trees and the step is
`jax.jit(...).lower(ShapeDtypeStructs).compile()`d for one device at the per-device batch
(the config's batch over `--devices`). The stage is recognised from the config's keys (generate,
train, finetune, invert). A diffusion `model_path` is a diffusers folder (only its config.json files
are read) or a built-in architecture name (`diffusion.architectures`: sd15, tiny).

XLA's cost analysis counts a loop body once, so the sampler is compiled as its parts (text encoder
on the CFG batch, one UNet call on the CFG batch, VAE decode) and the FLOPs/bytes are
text + steps x UNet + VAE; its peak memory is every part's weights plus the largest part's
activations. Lives in `train/` because planning `train` needs the classifier step
(`train.steps`), and nothing may import `train`.
"""
from __future__ import annotations

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import planner
from synth_jax.config import dtype_from
from synth_jax.errors import ConfigError


def stage_of(config) -> str:
  """Which stage a config belongs to, from keys only that stage's configs have."""
  keys = set(config.keys())
  for stage, marks in (("generate", {"guidance", "images_per_class"}),
                       ("finetune", {"snr_gamma", "grad_accum"}),
                       ("invert", {"token", "init_word"}),
                       ("train", {"phase1", "model"})):
    if marks <= keys:
      return stage
  raise ConfigError("plan needs a generate, train, finetune or invert config (--config "
                    "configs/<stage>/base.py); this one has none of their keys")


def _sds(shape, dtype):
  return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _compile(fn, *args) -> dict:
  return planner.analyse(jax.jit(fn).lower(*args).compile())


def _nbytes(tree) -> int:
  return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


# ---- diffusion stages ---------------------------------------------------------------------------
def _pipeline(config, dtype):
  """(unet, vae, text_encoder, abstract params, configs) without reading any weights."""
  from synth_jax.diffusion import architectures
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.diffusion import vae as vae_lib
  from synth_jax.models import clip_text
  cfg = architectures.configs(config.get("model_path", ""))
  unet = unet_lib.UNet2DConditionModel.from_config(cfg["unet"], dtype)
  vae = vae_lib.AutoencoderKL.from_config(cfg["vae"], dtype)
  text = clip_text.CLIPTextModel.from_config(cfg["text_encoder"], dtype)
  key = jax.random.PRNGKey(0)
  s = unet.config.sample_size
  ids = jnp.zeros((1, text.max_position_embeddings), jnp.int32)
  params = {
      "unet": jax.eval_shape(unet.init, key, *unet.dummy_inputs())["params"],
      "vae": jax.eval_shape(vae.init, key, jnp.zeros((1, 2 * s, 2 * s, 3)))["params"],
      "text_encoder": jax.eval_shape(text.init, key, ids)["params"]}
  cast = lambda t: jax.tree.map(lambda x: _sds(x.shape, dtype), t)  # noqa: E731
  return unet, vae, text, {k: cast(v) for k, v in params.items()}, cfg


def _latent_side(config, cfg) -> int:
  f = 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)
  res = int(config.get("resolution") or 0) or int(cfg["unet"].get("sample_size", 64)) * f
  if res % f:
    raise ConfigError(f"resolution={res} is not divisible by {f}; use a multiple of {f}")
  return res // f


def plan_generate(config, batch: int) -> tuple[dict, int]:
  from synth_jax.diffusion import sampler
  dtype = dtype_from(config)
  unet, vae, text, params, cfg = _pipeline(config, dtype)
  impl = sampler.attention_impl_for(dtype, config.attention)
  unet, vae = unet.clone(attention_impl=impl), vae.clone(attention_impl=impl)
  h = _latent_side(config, cfg)
  tokens, width = text.max_position_embeddings, unet.config.cross_attention_dim
  ids = _sds((2 * batch, tokens), jnp.int32)
  parts = {
      "text": _compile(lambda p, i: text.apply({"params": p}, i)["last_hidden_state"],
                       params["text_encoder"], ids),
      "unet": _compile(lambda p, x, t, c: unet.apply({"params": p}, x, t, c), params["unet"],
                       _sds((2 * batch, h, h, unet.config.in_channels), dtype),
                       _sds((2 * batch,), jnp.int32), _sds((2 * batch, tokens, width), dtype)),
      "vae": _compile(lambda p, z: vae.apply({"params": p}, z, method=vae.decode), params["vae"],
                      _sds((batch, h, h, vae.config.latent_channels), dtype))}
  steps = int(config.steps)
  weight = {"text": 1, "unet": steps, "vae": 1}
  own = {"text": "text_encoder", "unet": "unet", "vae": "vae"}
  total = {k: sum(weight[n] * parts[n][k] for n in parts) for k in ("flops", "bytes_accessed")}
  activations = max(p["peak_bytes"] - _nbytes(params[own[n]]) for n, p in parts.items())
  biggest = max(parts.values(), key=lambda p: p["peak_bytes"])
  return dict(total, peak_bytes=_nbytes(params) + activations, largest=biggest["largest"],
              parts={n: {"flops": p["flops"], "peak_bytes": p["peak_bytes"]}
                     for n, p in parts.items()}), batch


def _denoise_inputs(config, cfg, unet, text, batch, dtype):
  h = _latent_side(config, cfg)
  return (_sds((batch, text.max_position_embeddings), jnp.int32),
          _sds((batch, h, h, unet.config.in_channels), jnp.float32), _sds((batch,), jnp.int32))


def plan_finetune(config, batch: int) -> tuple[dict, int]:
  """One optimizer step of the finetune objective (finetune_step.Trainer's loss, AdamW, EMA)."""
  import optax
  from synth_jax.diffusion import finetune_objective as objective
  dtype = dtype_from(config)
  unet, _, text, params, cfg = _pipeline(config, dtype)
  unet = unet.clone(remat=bool(config.remat))
  sched = dict(cfg["scheduler"])
  trained = {"unet": jax.tree.map(lambda x: _sds(x.shape, jnp.float32), params["unet"])}
  tx = objective.make_optimizer(config)

  def step(state, frozen, ids, latents, t):
    def loss(p):
      ctx = text.apply({"params": frozen}, ids)["last_hidden_state"]
      noise = jnp.zeros_like(latents)
      noisy = objective.schedulers.add_noise(sched, latents, noise, t)
      pred = unet.apply({"params": p["unet"]}, noisy, t, ctx)
      return objective.denoising_loss(pred, sched, latents, noise, t, 0.0)
    grad = jax.grad(loss)(state["params"])
    updates, opt = tx.update(grad, state["opt"], state["params"])
    new = optax.apply_updates(state["params"], updates)
    ema = jax.tree.map(lambda e, p: 0.9999 * e + 1e-4 * p, state["ema"], new)
    return {"params": new, "opt": opt, "ema": ema}

  state = {"params": trained, "opt": jax.eval_shape(tx.init, trained), "ema": trained}
  ids, latents, t = _denoise_inputs(config, cfg, unet, text, batch, dtype)
  return _compile(step, state, params["text_encoder"], ids, latents, t), batch


def plan_invert(config, batch: int) -> tuple[dict, int]:
  """One DSI step: gradient of the denoising loss w.r.t. the token row through text encoder and
  UNet (invert.Inverter.denoising_loss), frozen weights in config.dtype."""
  dtype = dtype_from(config)
  unet, _, text, params, cfg = _pipeline(config, dtype)

  def step(emb, frozen, ids, latents, t):
    def loss(emb):
      table = frozen["text_encoder"]["embeddings"]["token_embedding"]["embedding"]
      table = table.at[0].set(emb.astype(table.dtype))
      ctx = text.apply({"params": frozen["text_encoder"]}, ids, inputs_embeds=table[ids])
      pred = unet.apply({"params": frozen["unet"]}, latents.astype(dtype), t,
                        ctx["last_hidden_state"])
      return jnp.mean((pred.astype(jnp.float32) - latents) ** 2)
    return emb - 1e-3 * jax.grad(loss)(emb)

  frozen = {k: params[k] for k in ("unet", "text_encoder")}
  ids, latents, t = _denoise_inputs(config, cfg, unet, text, batch, dtype)
  return _compile(step, _sds((text.hidden_size,), jnp.float32), frozen, ids, latents, t), batch


# ---- classifier training ------------------------------------------------------------------------
def plan_train(config, batch: int) -> tuple[dict, int]:
  from synth_jax import models
  from synth_jax.train import state as state_lib
  from synth_jax.train import steps as steps_lib
  from synth_jax.data import registry
  name = config.model
  variant = (models.ResNetVariant(name[len("resnet:"):]) if name.startswith("resnet:")
             else getattr(models, name, None))
  if variant is None:
    raise ConfigError(f"config.model={name!r} is unknown; use resnet18..resnet152, vit_*")
  spec = registry.REGISTRY.get(str(config.dataset))
  classes = spec.num_classes if spec else 1000  # a dataset folder: the head's width barely counts
  res = int(config.augment.resolution)
  dtype = dtype_from(config, allowed=("float32", "bfloat16"))
  kw = {"dtype": dtype} if dtype != jnp.float32 else {}
  model, params, stats = _abstract_init(variant, classes, res, kw)
  tx = state_lib.make_optimizer(config, config.phase1, 1000)
  state = jax.eval_shape(lambda p, s: state_lib.TrainState.create(p, s, tx), params, stats)
  step = steps_lib.make_train_step(model, tx, classes, dtype=dtype)
  batch_arg = {"image": _sds((batch, res, res, 3), jnp.uint8), "label": _sds((batch,), jnp.int32)}
  compiled = step.lower(state, batch_arg, _sds((2,), jnp.uint32)).compile()
  return planner.analyse(compiled), batch


def _abstract_init(variant, classes, res, kw):
  model = variant(num_classes=classes, domains=("real",), **kw)
  v = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, res, res, 3), jnp.float32))
  return model, v["params"], v.get("batch_stats", {})


PLANNERS = {"generate": plan_generate, "finetune": plan_finetune, "invert": plan_invert,
            "train": plan_train}


def validate(config, stage: str, devices, chips) -> None:
  """The values the plan's shapes come from, the devices and the chips, before anything compiles
  (one line each; the stage's own validator would also demand weights and data, which plan needs
  neither of)."""
  from synth_jax import checks
  from synth_jax.checks import Int, OneOf, Text
  if isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= 65536:
    raise ConfigError(f"--devices={devices} must be an integer in [1, 65536]; e.g. --devices 8")
  chips = [chips] if isinstance(chips, str) else list(chips)
  if not chips or not all(isinstance(c, str) and c.strip() for c in chips):
    raise ConfigError(f"--chip={','.join(map(str, chips))!r} names no chip; use a comma-separated "
                      f"list of {', '.join(planner.CHIPS)}")
  for c in chips:
    planner.chip(c)
  rules = {"batch_size": Int(1, 2**20, 32), "dtype": OneOf(checks.DTYPES, "bfloat16"),
           "model_path": Text(), "steps": Int(1, checks.BIG, 25), "resolution": Int(0, 4096, 512)}
  if stage == "finetune":
    rules.update({"grad_accum": Int(1, 65536, 1), "remat": checks.Bool()})
  if stage == "train":
    rules = {"batch_size": Int(1, 2**20, 256), "model": Text(True, "resnet50"),
             "augment.resolution": Int(8, 4096, 224), "dtype": OneOf(checks.DTYPES, "float32")}
  checks.check(config, rules)
  if stage == "finetune" and config.batch_size % config.grad_accum:
    raise checks.bad("grad_accum", config.grad_accum,
                     f"does not divide batch_size={config.batch_size}", 1)


def plan(config, devices: int = 1, chips=tuple(planner.CHIPS), out=sys.stdout) -> dict:
  """Compiles the config's step for its per-device batch, prints a table and JSON, returns it."""
  stage = stage_of(config)
  validate(config, stage, devices, chips)
  per_device = max(1, math.ceil(int(config.batch_size) / devices))
  if stage == "finetune":
    per_device = max(1, per_device // max(1, int(config.grad_accum)))
  cost, images = PLANNERS[stage](config, per_device)
  result = {"stage": stage, "devices": devices, "per_device_batch": per_device,
            "flops_per_image": cost["flops"] / images,
            "bytes_per_image": cost["bytes_accessed"] / images,
            "peak_bytes": cost["peak_bytes"], "largest": cost["largest"],
            "largest_source": "optimized HLO value shapes (upper bound per buffer)",
            "compiled_for": jax.default_backend(),
            "chips": [planner.roofline(cost["flops"], cost["bytes_accessed"], cost["peak_bytes"],
                                       images, planner.chip(c)) for c in chips]}
  for r in result["chips"]:
    r["images_per_s"] = r["images_per_s_per_device"] * devices
  if "parts" in cost:
    result["parts"] = cost["parts"]
  print(planner.format_table(result), file=out)
  print(json.dumps(result), file=out)
  return result

