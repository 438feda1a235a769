"""The denoising objective, optimizer and EMA of `synth-jax finetune`, as diffusers trains SD.

Each piece follows diffusers' `examples/text_to_image/train_text_to_image.py` line for line, so a
recipe carries over and `tests/finetune/test_parity.py` can check us against it:

- latents = VAE latent sample x `scaling_factor`; noise ~ N(0, 1), plus `noise_offset` x N(0, 1)
  per (example, channel) when set; timesteps uniform in [0, num_train_timesteps);
- noisy = DDPMScheduler.add_noise; target = noise (epsilon) or get_velocity (v_prediction), from
  the model's scheduler config;
- loss = MSE(pred.float(), target.float()) averaged over everything, or with min-SNR-gamma
  (`snr_gamma` > 0) per-example weights min(snr, gamma) / snr (epsilon) or / (snr + 1) (v);
- AdamW (torch.optim.AdamW semantics: decoupled weight decay) after global-norm clipping
  (`clip_grad_norm_`), learning rate linear warmup then constant (diffusers'
  `constant_with_warmup`; `constant` when warmup is 0);
- EMA as diffusers' `EMAModel` with its defaults: decay_t = min(decay, (1 + s) / (10 + s)) with
  s = t - 1 (0 at the first update, so the first EMA equals the weights).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from synth_jax.diffusion import schedulers


def compute_snr(scheduler_config: Mapping[str, Any], t):
  """(sqrt(a_t) / sqrt(1 - a_t))^2, diffusers.training_utils.compute_snr."""
  ac = schedulers.train_alphas(scheduler_config)[jnp.asarray(t)]
  return (jnp.sqrt(ac) / jnp.sqrt(1.0 - ac)) ** 2


def draw_noise(key, latents, num_train_timesteps: int, noise_offset: float = 0.0):
  """(noise, timesteps) of one batch, as the training script draws them."""
  k_noise, k_offset, k_t = jax.random.split(key, 3)
  noise = jax.random.normal(k_noise, latents.shape, jnp.float32)
  if noise_offset:
    # one value per (example, channel), broadcast over the image (NHWC: axes 1, 2)
    shape = (latents.shape[0], 1, 1, latents.shape[-1])
    noise = noise + noise_offset * jax.random.normal(k_offset, shape, jnp.float32)
  t = jax.random.randint(k_t, (latents.shape[0],), 0, num_train_timesteps)
  return noise, t


def denoising_loss(pred, scheduler_config: Mapping[str, Any], latents, noise, t,
                   snr_gamma: float = 0.0):
  """MSE of the UNet's prediction against the scheduler's training target (see module doc)."""
  target = schedulers.training_target(scheduler_config, latents, noise, t).astype(jnp.float32)
  err = (pred.astype(jnp.float32) - target) ** 2
  if not snr_gamma:
    return jnp.mean(err)
  snr = compute_snr(scheduler_config, t)
  weight = jnp.minimum(snr, snr_gamma)
  if dict(scheduler_config).get("prediction_type", "epsilon") == "v_prediction":
    weight = weight / (snr + 1)
  else:
    weight = weight / snr
  return jnp.mean(jnp.mean(err, axis=tuple(range(1, err.ndim))) * weight)


def learning_rate(config):
  """Linear warmup from 0 over `warmup_steps`, then constant (diffusers' constant_with_warmup)."""
  import optax
  lr, warmup = float(config.learning_rate), int(config.warmup_steps)
  if warmup <= 0:
    return optax.constant_schedule(lr)
  # LambdaLR's factor at optimizer step n is n / warmup: 0 at the first step, as optax's count 0
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                               optax.constant_schedule(lr)], [warmup])


def make_optimizer(config):
  """Gradient clipping (when max_grad_norm > 0), then AdamW (torch.optim.AdamW semantics)."""
  import optax
  adamw = optax.adamw(learning_rate(config), b1=float(config.adam_beta1),
                      b2=float(config.adam_beta2), eps=float(config.adam_epsilon),
                      weight_decay=float(config.weight_decay))
  if float(config.max_grad_norm) > 0:
    return optax.chain(optax.clip_by_global_norm(float(config.max_grad_norm)), adamw)
  return adamw


def ema_decay(step, max_decay: float):
  """diffusers EMAModel.get_decay at optimization step `step` (1 = the first update)."""
  s = jnp.maximum(0, step - 1).astype(jnp.float32)
  decay = jnp.minimum((1.0 + s) / (10.0 + s), max_decay)
  return jnp.where(s <= 0, 0.0, decay)


def ema_update(ema, params, step, max_decay: float):
  """One EMAModel.step: ema -= (1 - decay) * (ema - params)."""
  one_minus = 1.0 - ema_decay(step, max_decay)
  return jax.tree.map(lambda e, p: e - one_minus * (e - p.astype(e.dtype)), ema, params)
