"""Text -> images in one jitted, mesh-sharded function.

Text encoding, the whole denoising loop (`lax.fori_loop`) with classifier-free guidance, VAE decode
and the conversion to uint8 are one XLA program. Token ids, seeds and the guidance scale are traced
arguments, so new prompts, seeds or guidance never recompile; the batch size and the number of steps
are the only shapes. The batch is sharded over the mesh's data axes, parameters are placed by the
rule table in `sharding.py` (attention heads / MLP units over `tensor`, large weights over `fsdp`
when `fsdp=True`, replicated otherwise). Each image's starting noise comes from its own seed only, so an
image does not depend on which batch or device it was generated in.

Multi-host: generation needs no communication between hosts, so `local_mesh` gives each process a
mesh over its own devices and each process samples its own images (the generate job hands process
p the shards p, p + P, ...). No lockstep: a slow or restarted host never stalls the others.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import config as config_lib
from synth_jax import sharding
from synth_jax.diffusion import attention as attention_lib
from synth_jax.diffusion import loading
from synth_jax.diffusion import lora as lora_lib
from synth_jax.diffusion import schedulers
from synth_jax.diffusion import textual_inversion
from synth_jax.diffusion import unet as unet_lib
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)


def initial_latents(seeds, shape: tuple[int, int, int], dtype=jnp.float32):
  """One N(0, 1) latent (h, w, c) per uint32 seed; independent of batch composition."""
  return jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), shape, dtype))(seeds)


def step_noise(seeds, i, shape: tuple[int, int, int], dtype=jnp.float32):
  """The fresh N(0, 1) noise a stochastic sampler (Euler ancestral, LCM) adds at step i, per seed.

  Folded from the image's own seed and the step number, so it, too, ignores batch composition.
  """
  return jax.vmap(lambda s: jax.random.normal(
      jax.random.fold_in(jax.random.PRNGKey(s), i + 1), shape, dtype))(seeds)


def to_uint8(images):
  """Decoder output in [-1, 1] -> uint8, rounded as diffusers' numpy_to_pil does."""
  return jnp.round(jnp.clip(images.astype(jnp.float32) / 2 + 0.5, 0, 1) * 255).astype(jnp.uint8)


def attention_impl_for(dtype, requested: str | None = "auto") -> str | None:
  """'auto': Pallas splash attention on TPUs, cuDNN flash attention on GPUs in bf16/fp16, XLA
  elsewhere (CPU, fp32 on GPU).

  An explicit 'cudnn' or 'splash' where it cannot run natively (no GPU/TPU, or fp32 for cuDNN) is a
  ConfigError, not a silent fallback: whoever asked for it is measuring or debugging that kernel
  (tests run splash in Pallas' interpret mode through `attention_impl` directly). None lets JAX
  choose.
  """
  low = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  backend = jax.default_backend()
  on_gpu = backend == "gpu"
  if requested == "auto":
    return "splash" if backend == "tpu" else "cudnn" if on_gpu and low else "xla"
  if requested not in attention_lib.IMPLEMENTATIONS:
    raise ConfigError(f"attention={requested!r} is not one of 'auto', 'xla', 'cudnn', 'splash', None")
  where = f"backend {backend}, dtype {jnp.dtype(dtype).name}"
  if requested == "cudnn" and not (on_gpu and low):
    raise ConfigError(f"attention='cudnn' needs a GPU and bf16/fp16 ({where}); use 'xla' or 'auto'")
  if requested == "splash" and backend != "tpu":
    raise ConfigError(f"attention='splash' needs a TPU ({where}); use 'xla' or 'auto'")
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
    # the rule table: heads/mlp over "tensor"; with fsdp=True also large weights over "fsdp"
    shardings = sharding.logical_shardings(params, self.mesh, fsdp=self.fsdp)
    self.params = jax.device_put(params, shardings)
    batch = sharding.batch_sharding(self.mesh)
    # `guided` (guidance > 1) is static: one program with the doubled CFG batch, one without,
    # each compiled when first used
    self._fns = {g: jax.jit(functools.partial(self._sample, guided=g),
                            in_shardings=(shardings, batch, batch, batch, None),
                            out_shardings=sharding.batch_sharding(self.mesh, 4))
                 for g in (True, False)}
    self.compiles = 0

  @classmethod
  def from_config(cls, config, mesh=None) -> "Sampler":
    """From a generate config: model_path (+ single_file_config), dtype, batch_size, steps, ..."""
    if mesh is None or jax.process_count() > 1:
      mesh = local_mesh(config.get("mesh"))
    dtype = config_lib.dtype_from(config)  # configs/generate/base.py is the only default
    # model_path: a diffusers folder, or a single-file checkpoint converted by diffusers
    # or a Hub id org/name (model_revision, model_variant) resolved through the HF cache
    pipe = loading.load(config.model_path, dtype, config.get("single_file_config") or None,
                        revision=config.get("model_revision") or None,
                        variant=config.get("model_variant") or None)
    for lora_path, scale in lora_lib.parse_specs(config.get("lora", "")):  # fused into weights
      log.info("fused LoRA %s (scale %g) into %s", lora_path, scale,
               ", ".join(lora_lib.fuse(pipe, lora_path, scale)))
    path = config.get("style_token_path")
    if path:  # a learned_embeds file, or a folder of them (per-class inversion)
      files = ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
               if os.path.isdir(path) else [path])
      for f in files:
        tokens = textual_inversion.load_textual_inversion(pipe, f)
        log.info("loaded style token(s) %s from %s", tokens, f)
    return cls(pipe, mesh, batch_size=config.batch_size, num_steps=config.steps,
               height=config.get("resolution") or None, width=config.get("resolution") or None,
               scheduler=config.scheduler,
               scheduler_overrides=dict(config.scheduler_overrides or {}),
               fsdp=bool(config.fsdp), attention=config.attention)

  # ---- the compiled program -------------------------------------------------------------------
  def _encode(self, params, ids):
    """(UNet context, SDXL extras {text_embeds, time_ids} or {}) for token ids.

    SDXL (diffusers' encode_prompt): both encoders' penultimate hidden states side by side, the
    pooled projection of the second; `zero` rows (an empty negative prompt where the pipeline
    says force_zeros_for_empty_prompt) become zeros.
    """
    pipe = self.pipe
    if not pipe.is_xl:
      return pipe.text_encoder.apply({"params": params["text_encoder"]}, ids)["last_hidden_state"], {}
    one = pipe.text_encoder.apply({"params": params["text_encoder"]}, ids["ids"])
    two = pipe.text_encoder_2.apply({"params": params["text_encoder_2"]}, ids["ids_2"])
    context = jnp.concatenate([one["hidden_states"][-2], two["hidden_states"][-2]], axis=-1)
    pooled = two["text_embeds"]
    if "zero" in ids:
      context = jnp.where(ids["zero"][:, None, None], 0, context)
      pooled = jnp.where(ids["zero"][:, None], 0, pooled)
    # original size, crop top-left, target size: diffusers' defaults for a fresh image
    size = jnp.asarray([self.height, self.width, 0, 0, self.height, self.width], jnp.float32)
    return context, {"text_embeds": pooled,
                     "time_ids": jnp.broadcast_to(size, (pooled.shape[0], 6))}

  def guided(self, guidance: float) -> bool:
    """Whether a guidance scale runs classifier-free guidance (the doubled batch): above 1, and
    never for an LCM-distilled UNet, which takes the scale as an input instead (diffusers does
    not run CFG when the UNet has time_cond_proj_dim)."""
    return bool(guidance > 1) and not self.unet.config.time_cond_proj_dim

  def _sample(self, params, ids, negative_ids, seeds, guidance, latents=None, guided=True):
    """guided=False (diffusers: guidance <= 1) is the conditional prediction alone: the negative
    prompt is never encoded and the UNet runs on the batch itself, not a doubled one."""
    self.compiles += 1  # runs only while tracing: counts compilations
    pipe, plan, sched = self.pipe, self.plan, self.sched
    f = pipe.vae_scale_factor
    shape = (self.height // f, self.width // f, self.unet.config.in_channels)
    context, added = self._encode(params, ids)
    if self.unet.config.time_cond_proj_dim:  # LCM-distilled: w - 1, embedded, is an input
      w = jnp.broadcast_to(jnp.asarray(guidance, jnp.float32) - 1.0, (context.shape[0],))
      added = {**added, "timestep_cond": unet_lib.guidance_embedding(
          w, self.unet.config.time_cond_proj_dim)}
    if guided:
      neg_context, neg_added = self._encode(params, negative_ids)
      context = jnp.concatenate([neg_context, context])
      added = {k: jnp.concatenate([neg_added[k], v]) for k, v in added.items()}
    if latents is None:
      latents = initial_latents(seeds, shape)
    latents = latents.astype(jnp.float32) * plan.init_noise_sigma
    state = sched.init_state(plan, latents.shape, jnp.float32)

    def step(i, carry):
      latents, state = carry
      x = sched.scale_model_input(plan, i, latents)
      x = (jnp.concatenate([x, x]) if guided else x).astype(pipe.dtype)
      t = jnp.broadcast_to(plan.timesteps[i], (x.shape[0],))
      pred = self.unet.apply({"params": params["unet"]}, x, t, context, **added
                             ).astype(jnp.float32)
      if guided:
        uncond, cond = jnp.split(pred, 2)
        pred = uncond + guidance * (cond - uncond)
      if sched.stochastic:
        return sched.step(plan, i, pred, latents, state, noise=step_noise(seeds, i, shape))
      return sched.step(plan, i, pred, latents, state)

    # plan.num_steps: diffusers' trailing spacing sometimes yields one more step than asked for
    latents, _ = jax.lax.fori_loop(0, plan.num_steps, step, (latents, state))
    images = self.vae.apply({"params": params["vae"]}, latents / pipe.vae_scaling_factor,
                            method=self.vae.decode)
    return to_uint8(images)

  # ---- host side --------------------------------------------------------------------------------
  def tokenize(self, prompts: Sequence[str], negative: bool = False):
    """int32 ids (B, T); SDXL: {'ids', 'ids_2'} (each encoder's tokenizer), and for a negative
    prompt 'zero' (B,) where it is empty and force_zeros_for_empty_prompt holds."""
    pipe = self.pipe
    def ids(tokenizer, length):
      text = textual_inversion.maybe_convert_prompt(list(prompts), tokenizer)
      return tokenizer(text, padding="max_length", max_length=length, truncation=True,
                       return_tensors="np").input_ids.astype(np.int32)
    if not pipe.is_xl:
      return ids(pipe.tokenizer, pipe.max_length)
    length_2 = min(pipe.tokenizer_2.model_max_length, pipe.text_encoder_2.max_position_embeddings)
    out = {"ids": ids(pipe.tokenizer, pipe.max_length), "ids_2": ids(pipe.tokenizer_2, length_2)}
    if negative:
      out["zero"] = np.array([pipe.force_zeros_for_empty_prompt and not p for p in prompts])
    return out

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
    fn = self._fns[self.guided(guidance)]
    # Placed first: on a multi-process run jit refuses numpy inputs with a non-replicated
    # sharding, even on this process's own (local) mesh.
    batch = sharding.batch_sharding(self.mesh)
    ids, neg, seeds = jax.device_put(
        (self.tokenize(prompts), self.tokenize(negative, negative=True), seeds),
        (batch, batch, batch))
    with jax.set_mesh(self.mesh):  # lets a Pallas attention kernel shard_map over the batch
      return np.asarray(fn(self.params, ids, neg, seeds, jnp.float32(guidance)))

  def sample_from_latents(self, prompts, negative, latents, guidance: float,
                          seeds=None) -> np.ndarray:
    """As __call__ but from given NHWC starting latents (parity tests against diffusers); seeds
    (default 0) only feed the per-step noise of Euler ancestral / LCM (see `step_noise`)."""
    if isinstance(negative, str):
      negative = [negative] * len(prompts)
    seeds = np.zeros(len(prompts), np.uint32) if seeds is None else np.asarray(seeds, np.uint32)
    fn = jax.jit(self._sample, static_argnames=("guided",))
    return np.asarray(fn(self.params, self.tokenize(prompts), self.tokenize(negative, negative=True),
                         seeds, jnp.float32(guidance), jnp.asarray(latents),
                         guided=self.guided(guidance)))
