"""Text -> images in one jitted, mesh-sharded function.

Text encoding, the whole denoising loop (`lax.fori_loop`) with classifier-free guidance, VAE decode
and the conversion to uint8 are one XLA program. Token ids, seeds and the guidance scale are traced
arguments, so new prompts, seeds or guidance never recompile; the batch size and the number of steps
are the only shapes. The batch is sharded over the mesh's data axes, parameters are replicated (or
split on `fsdp` when `fsdp=True`). Each image's starting noise comes from its own seed only, so an
image does not depend on which batch or device it was generated in.

Multi-host: generation needs no communication between hosts, so `local_mesh` gives each process a
mesh over its own devices and each process samples its own images (the generate job hands process
p the shards p, p + P, ...). No lockstep: a slow or restarted host never stalls the others.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import sharding
from synth_jax.diffusion import attention as attention_lib
from synth_jax.diffusion import loading
from synth_jax.diffusion import schedulers
from synth_jax.diffusion import textual_inversion
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)


def initial_latents(seeds, shape: tuple[int, int, int], dtype=jnp.float32):
  """One N(0, 1) latent (h, w, c) per uint32 seed; independent of batch composition."""
  return jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), shape, dtype))(seeds)


def to_uint8(images):
  """Decoder output in [-1, 1] -> uint8, rounded as diffusers' numpy_to_pil does."""
  return jnp.round(jnp.clip(images.astype(jnp.float32) / 2 + 0.5, 0, 1) * 255).astype(jnp.uint8)


def attention_impl_for(dtype, requested: str | None = "auto") -> str | None:
  """'auto': cuDNN flash attention on GPUs in bf16/fp16, XLA elsewhere (TPU, CPU, fp32).

  An explicit 'cudnn' where cuDNN cannot run (no GPU, or fp32) is a ConfigError, not a silent
  fallback: whoever asked for it is measuring or debugging that kernel. None lets JAX choose.
  """
  low = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  on_gpu = jax.default_backend() == "gpu"
  if requested == "auto":
    return "cudnn" if on_gpu and low else "xla"
  if requested not in attention_lib.IMPLEMENTATIONS:
    raise ConfigError(f"attention={requested!r} is not one of 'auto', 'xla', 'cudnn', None")
  if requested == "cudnn" and not (on_gpu and low):
    where = f"backend {jax.default_backend()}, dtype {jnp.dtype(dtype).name}"
    raise ConfigError(f"attention='cudnn' needs a GPU and bf16/fp16 ({where}); use 'xla' or 'auto'")
  return requested


def local_mesh(spec=None):
  """The config's mesh shape over this process's devices only (see the module docstring)."""
  return sharding.make_mesh(spec, devices=jax.local_devices())


@dataclasses.dataclass
class Sampler:
  """A loaded pipeline compiled for one (batch size, steps, resolution) on one mesh."""
  pipe: loading.StableDiffusion
  mesh: Any
  batch_size: int
  num_steps: int = 25
  height: int | None = None
  width: int | None = None
  scheduler: str | None = "dpm++2m"
  scheduler_overrides: dict = dataclasses.field(default_factory=dict)
  fsdp: bool = False
  attention: str | None = "auto"

  def __post_init__(self):
    pipe = self.pipe
    f = pipe.vae_scale_factor
    self.height = self.height or pipe.sample_size
    self.width = self.width or pipe.sample_size
    for side in (self.height, self.width):
      if side % f:
        raise ConfigError(f"resolution {side} is not divisible by {f} (the VAE's downscale); "
                          f"use a multiple of {f}, e.g. {side // f * f or f}")
    sharding.check_batch(self.mesh, self.batch_size)
    self.sched = schedulers.from_config(pipe.scheduler_config, self.scheduler,
                                        **self.scheduler_overrides)
    self.plan = self.sched.plan(self.num_steps)
    impl = attention_impl_for(pipe.dtype, self.attention)
    self.unet = pipe.unet.clone(attention_impl=impl)
    self.vae = pipe.vae.clone(attention_impl=impl)
    params = pipe.params
    shardings = jax.tree_util.tree_map(lambda _: sharding.replicated(self.mesh), params)
    if self.fsdp:
      shardings = dict(shardings, unet=sharding.param_shardings(params["unet"], self.mesh))
    self.params = jax.device_put(params, shardings)
    batch = sharding.batch_sharding(self.mesh)
    self._fn = jax.jit(self._sample, in_shardings=(shardings, batch, batch, batch, None),
                       out_shardings=sharding.batch_sharding(self.mesh, 4))
    self.compiles = 0

  @classmethod
  def from_config(cls, config, mesh=None) -> "Sampler":
    """From a generate config: model_path (+ single_file_config), dtype, batch_size, steps, ..."""
    if mesh is None or jax.process_count() > 1:
      mesh = local_mesh(config.get("mesh"))
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}.get(
        config.get("dtype", "float32"))
    if dtype is None:
      raise ConfigError(f"dtype={config.dtype!r} is not one of float32, bfloat16, float16")
    # model_path: a diffusers folder, or a single-file checkpoint converted by diffusers
    pipe = loading.load(config.model_path, dtype, config.get("single_file_config") or None)
    path = config.get("style_token_path")
    if path:  # a learned_embeds file, or a folder of them (per-class inversion)
      files = ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
               if os.path.isdir(path) else [path])
      for f in files:
        tokens = textual_inversion.load_textual_inversion(pipe, f)
        log.info("loaded style token(s) %s from %s", tokens, f)
    return cls(pipe, mesh, batch_size=config.batch_size, num_steps=config.steps,
               height=config.get("resolution") or None, width=config.get("resolution") or None,
               scheduler=config.get("scheduler", "dpm++2m"),
               scheduler_overrides=dict(config.get("scheduler_overrides", {}) or {}),
               fsdp=bool(config.get("fsdp", False)), attention=config.get("attention", "auto"))

  # ---- the compiled program -------------------------------------------------------------------
  def _encode(self, params, ids):
    out = self.pipe.text_encoder.apply({"params": params["text_encoder"]}, ids)
    return out["last_hidden_state"]

  def _sample(self, params, ids, negative_ids, seeds, guidance, latents=None):
    self.compiles += 1  # runs only while tracing: counts compilations
    pipe, plan, sched = self.pipe, self.plan, self.sched
    f = pipe.vae_scale_factor
    shape = (self.height // f, self.width // f, self.unet.config.in_channels)
    context = jnp.concatenate([self._encode(params, negative_ids), self._encode(params, ids)])
    if latents is None:
      latents = initial_latents(seeds, shape)
    latents = latents.astype(jnp.float32) * plan.init_noise_sigma
    state = sched.init_state(plan, latents.shape, jnp.float32)

    def step(i, carry):
      latents, state = carry
      x = sched.scale_model_input(plan, i, latents)
      x = jnp.concatenate([x, x]).astype(pipe.dtype)
      t = jnp.broadcast_to(plan.timesteps[i], (x.shape[0],))
      pred = self.unet.apply({"params": params["unet"]}, x, t, context).astype(jnp.float32)
      uncond, cond = jnp.split(pred, 2)
      pred = uncond + guidance * (cond - uncond)
      return sched.step(plan, i, pred, latents, state)

    # plan.num_steps: diffusers' trailing spacing sometimes yields one more step than asked for
    latents, _ = jax.lax.fori_loop(0, plan.num_steps, step, (latents, state))
    images = self.vae.apply({"params": params["vae"]}, latents / pipe.vae_scaling_factor,
                            method=self.vae.decode)
    return to_uint8(images)

  # ---- host side --------------------------------------------------------------------------------
  def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
    prompts = textual_inversion.maybe_convert_prompt(list(prompts), self.pipe.tokenizer)
    return self.pipe.tokenizer(prompts, padding="max_length", max_length=self.pipe.max_length,
                               truncation=True, return_tensors="np").input_ids.astype(np.int32)

  def __call__(self, prompts: Sequence[str], negative: Sequence[str] | str = "",
               seeds: Sequence[int] | np.ndarray = (), guidance: float = 7.5) -> np.ndarray:
    """uint8 images (B, H, W, 3) for B = batch_size prompts and seeds."""
    n = len(prompts)
    if n != self.batch_size or len(seeds) != n:
      raise ConfigError(f"got {n} prompts and {len(seeds)} seeds; this sampler was compiled for "
                        f"batch_size={self.batch_size} (pad the last batch)")
    if isinstance(negative, str):
      negative = [negative] * n
    seeds = np.asarray(seeds, np.uint32)
    # Placed first: on a multi-process run jit refuses numpy inputs with a non-replicated
    # sharding, even on this process's own (local) mesh.
    batch = sharding.batch_sharding(self.mesh)
    ids, neg, seeds = jax.device_put((self.tokenize(prompts), self.tokenize(negative), seeds),
                                     (batch, batch, batch))
    return np.asarray(self._fn(self.params, ids, neg, seeds, jnp.float32(guidance)))

  def sample_from_latents(self, prompts, negative, latents, guidance: float) -> np.ndarray:
    """As __call__ but from given NHWC starting latents (parity tests against diffusers)."""
    if isinstance(negative, str):
      negative = [negative] * len(prompts)
    fn = jax.jit(self._sample)
    return np.asarray(fn(self.params, self.tokenize(prompts), self.tokenize(negative),
                         np.zeros(len(prompts), np.uint32), jnp.float32(guidance),
                         jnp.asarray(latents)))
