"""The trainable state and the jitted train step of `synth-jax finetune`.

State = {"params": trained components (fp32 master weights: the UNet, plus the text encoder when
`train_text_encoder`), "opt": AdamW state, "ema": EMA of those weights (when `ema`), "step"}.
Every array of it is placed by the logical-axis rule table (`sharding.logical_shardings`:
heads/MLP units over `tensor`, large tensors over `fsdp`), optimizer and EMA leaves exactly as their
parameters; the batch is split over ("data", "fsdp"). Compute runs in `config.dtype` (bf16: the
modules cast the fp32 weights per op), loss and updates in fp32. One step = `grad_accum`
micro-batches whose gradients are averaged (a `lax.scan`), then one clipped AdamW update and one
EMA update. The frozen components (VAE for the cached latents, text encoder unless trained) are
constants of the step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import config as config_lib
from synth_jax import sharding, streams
from synth_jax.diffusion import finetune_objective as objective
from synth_jax.errors import ConfigError



def _f32(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float32), tree)


class Trainer:
  """Modules, shardings, optimizer and jitted step of one finetune run (pipe loaded in fp32)."""

  def __init__(self, config, pipe, mesh):
    self.config, self.pipe, self.mesh = config, pipe, mesh
    dt = config_lib.dtype_from(config, allowed=("float32", "bfloat16"))
    batch, accum = int(config.batch_size), int(config.grad_accum)
    if accum < 1 or batch % accum:
      raise ConfigError(f"grad_accum={accum} must be >= 1 and divide batch_size={batch}")
    sharding.check_batch(mesh, batch // accum, "batch_size / grad_accum")
    self.unet = pipe.unet.clone(dtype=dt, remat=bool(config.remat))
    self.text_encoder = pipe.text_encoder.clone(dtype=dt)
    self.names = ("unet", "text_encoder") if config.train_text_encoder else ("unet",)
    self.sched = dict(pipe.scheduler_config)
    self.num_train_timesteps = int(self.sched.get("num_train_timesteps", 1000))
    self.scale = pipe.vae_scaling_factor
    self.tx = objective.make_optimizer(config)
    self.rep = sharding.replicated(mesh)
    frozen = {k: jax.tree.map(lambda x: np.asarray(x).astype(dt), pipe.params[k])
              for k in ("unet", "text_encoder") if k not in self.names}
    self.frozen = jax.device_put(frozen, sharding.logical_shardings(frozen, mesh))
    self.shardings = self._state_shardings()
    self._step = jax.jit(self._train_step, donate_argnums=(0,),
                         out_shardings=(self.shardings, self.rep))
    self.compiles = 0

  # ---- state ----------------------------------------------------------------------------------
  def _state_shardings(self):
    import optax
    params = {k: self.pipe.params[k] for k in self.names}
    p_sh = sharding.logical_shardings(params, self.mesh)
    opt_shape = jax.eval_shape(self.tx.init, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.float32), params))
    # AdamW's mu/nu are shaped as the params: placed as they are; counts replicated
    opt_sh = optax.tree_map_params(self.tx, lambda _, s: s, opt_shape, p_sh,
                                   transform_non_params=lambda _: self.rep)
    out = {"params": p_sh, "opt": opt_sh, "step": self.rep}
    if self.config.ema:
      out["ema"] = p_sh
    return out

  def init_state(self, params=None):
    """The state at step 0 from `params` ({name: tree}; default the pipeline's), placed."""
    params = _f32(params or {k: self.pipe.params[k] for k in self.names})
    params = jax.device_put(params, self.shardings["params"])
    state = {"params": params, "step": jax.device_put(np.int32(0), self.rep),
             "opt": jax.jit(self.tx.init, out_shardings=self.shardings["opt"])(params)}
    if self.config.ema:
      state["ema"] = jax.jit(lambda p: jax.tree.map(jnp.copy, p),
                             out_shardings=self.shardings["ema"])(params)
    return state

  def abstract_state(self):
    """ShapeDtypeStructs with shardings of the state (what a checkpoint restores into)."""
    shapes = jax.eval_shape(self.init_state)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, self.shardings)

  # ---- objective --------------------------------------------------------------------------------
  def loss(self, params, frozen, ids, latents, noise, t):
    """The denoising loss for scaled latents, noise and timesteps (what the parity test checks)."""
    all_params = {**frozen, **params}
    text = self.text_encoder.apply({"params": all_params["text_encoder"]}, ids)
    noisy = objective.schedulers.add_noise(self.sched, latents, noise, t)
    pred = self.unet.apply({"params": all_params["unet"]}, noisy, t, text["last_hidden_state"])
    return objective.denoising_loss(pred, self.sched, latents, noise, t,
                                    float(self.config.snr_gamma))

  def micro_loss(self, params, frozen, ids, mean, std, key):
    """Loss of one micro-batch: latents sampled from the cached posterior, noise and t drawn."""
    k_lat, k_noise = jax.random.split(key)
    latents = (mean + std * jax.random.normal(k_lat, mean.shape)) * self.scale
    noise, t = objective.draw_noise(k_noise, latents, self.num_train_timesteps,
                                    float(self.config.noise_offset))
    return self.loss(params, frozen, ids, latents, noise, t)

  def grads(self, params, frozen, ids, mean, std, key):
    """(mean loss, mean gradient) over `grad_accum` equal micro-batches of the batch."""
    accum = int(self.config.grad_accum)
    vg = jax.value_and_grad(self.micro_loss)
    if accum == 1:
      return vg(params, frozen, ids, mean, std, key)
    # (B, ...) -> (accum, B / accum, ...) taking every accum-th row, so each device keeps its rows
    split = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)  # noqa: E731
    micro = jax.tree.map(split, (ids, mean, std))
    keys = jax.random.split(key, accum)
    zero = jax.tree.map(jnp.zeros_like, params)

    def body(carry, xs):
      loss_sum, grad_sum = carry
      loss, grad = vg(params, frozen, *xs[0], xs[1])
      return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grad)), None

    (loss, grad), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zero), (micro, keys))
    return loss / accum, jax.tree.map(lambda g: g / accum, grad)

  def apply_update(self, state, grad):
    """One optimizer step and one EMA step on `state` with gradient `grad`."""
    import optax
    updates, opt = self.tx.update(grad, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    step = state["step"] + 1
    out = {"params": params, "opt": opt, "step": step}
    if self.config.ema:
      out["ema"] = objective.ema_update(state["ema"], params, step, float(self.config.ema_decay))
    return out

  def _train_step(self, state, frozen, ids, mean, std, key):
    self.compiles += 1  # runs only while tracing: counts compilations
    loss, grad = self.grads(state["params"], frozen, ids, mean, std, key)
    return self.apply_update(state, grad), loss

  # ---- one step of the run -------------------------------------------------------------------------
  def batch(self, data, step: int):
    """(ids, mean, std, key) of step `step` from (seed, step) only; sharded over the batch axes."""
    seed = int(self.config.seed)
    ids, mean, std = data.batch(seed, step, int(self.config.batch_size),
                                float(self.config.caption_dropout))
    ids, mean, std = sharding.shard_global_batch((ids, mean, std), self.mesh)
    return ids, mean, std, streams.key(seed, "finetune_noise", step)

  def train_step(self, state, batch):
    """-> (new state, loss); `state` is donated."""
    return self._step(state, self.frozen, *batch)

  def exported(self, state) -> dict:
    """{name: numpy fp32 tree} of the weights to export: the EMA when on, else the params."""
    return jax.tree.map(lambda x: np.asarray(x, np.float32),
                        jax.device_get(state["ema" if self.config.ema else "params"]))
