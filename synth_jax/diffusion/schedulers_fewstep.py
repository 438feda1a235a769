"""Euler ancestral and LCM: the samplers of few-step generators (SD/SDXL-Turbo, LCM, LCM-LoRA).

Same shape as the samplers in schedulers.py (host-side tables from diffusers 0.42's `set_timesteps`,
a traced `step`), plus per-step noise: both add fresh N(0, 1) noise after each update, which the
caller passes in (the sampler draws it per image seed, so it does not depend on the batch).
"""
from __future__ import annotations

import numpy as np

from synth_jax.diffusion import schedulers_tables as tables
from synth_jax.errors import ConfigError

F32 = np.float32
_NOISE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
              trained_betas=None)
DEFAULTS = {
    "euler_a": dict(_NOISE, prediction_type="epsilon", timestep_spacing="linspace",
                    steps_offset=0, rescale_betas_zero_snr=False),
    "lcm": dict(_NOISE, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                original_inference_steps=50, clip_sample=False, clip_sample_range=1.0,
                set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon",
                thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0,
                timestep_spacing="leading", timestep_scaling=10.0, rescale_betas_zero_snr=False),
}
PREDICTIONS = {"euler_a": ("epsilon", "v_prediction"),
               "lcm": ("epsilon", "sample", "v_prediction")}


def _r(v):
  """float32 rounding kept in float64 (see schedulers._r): torch's float32 scalar math."""
  return np.asarray(v, np.float64).astype(F32).astype(np.float64)


# ---- Euler ancestral ------------------------------------------------------------------------------
def euler_a_plan(cfg, n):
  """EulerAncestralDiscreteScheduler: Euler's sigmas; each step splits sigma_to into down + up."""
  cfg = dict(cfg, use_karras_sigmas=False, final_sigmas_type="zero")
  t, sig = tables.sampling_sigmas(cfg, n, "euler")
  sig = sig.astype(np.float64)
  s, to = sig[:-1], sig[1:]
  up = _r(np.sqrt(_r(_r(_r(to * to) * _r(_r(s * s) - _r(to * to))) / _r(s * s))))
  down = _r(np.sqrt(np.maximum(_r(_r(to * to) - _r(up * up)), 0)))
  sq = _r(_r(s * s) + 1)
  root = _r(np.sqrt(sq))
  coefs = dict(sigma=s, dt=_r(down - s), up=up, in_scale=root, v_out=_r(-s / root), v_skip=sq)
  top = sig.max()
  init = top if cfg["timestep_spacing"] in ("linspace", "trailing") else _r(np.sqrt(_r(top * top + 1)))
  return t.astype(F32), coefs, float(init)


def euler_a_step(cfg, c, out, x, noise):
  if cfg["prediction_type"] == "epsilon":
    x0 = x - c["sigma"] * out
  else:  # v_prediction
    x0 = out * c["v_out"] + x / c["v_skip"]
  return x + (x - x0) / c["sigma"] * c["dt"] + noise * c["up"]


# ---- LCM (Luo et al. 2023) ------------------------------------------------------------------------
def lcm_plan(cfg, n):
  """LCMScheduler: n of the `original_inference_steps` distillation timesteps, boundary scalings."""
  total, original = int(cfg["num_train_timesteps"]), int(cfg["original_inference_steps"])
  if n > original:
    raise ConfigError(f"steps={n} exceeds the LCM scheduler's original_inference_steps={original}; "
                      f"use steps <= {original}")
  k = total // original
  origin = (np.arange(1, original + 1) * k - 1)[::-1]
  t = origin[np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)]
  ac = tables.alphas_cumprod(cfg).astype(np.float64)
  final = 1.0 if cfg["set_alpha_to_one"] else ac[0]
  prev = np.concatenate([t[1:], t[-1:]])  # diffusers: the last step looks at its own timestep
  a_t = ac[t]
  a_prev = np.where(prev >= 0, ac[np.clip(prev, 0, None)], final)
  st = _r(t.astype(np.float64) * F32(cfg["timestep_scaling"]))
  den = _r(_r(st * st) + 0.25)
  last = np.arange(n) == n - 1  # the last step returns the denoised sample, no fresh noise
  coefs = dict(sa=_r(np.sqrt(a_t)), sb=_r(np.sqrt(_r(1 - a_t))), c_skip=_r(0.25 / den),
               c_out=_r(st / _r(np.sqrt(den))),
               sa_prev=np.where(last, 1.0, _r(np.sqrt(a_prev))),
               sb_prev=np.where(last, 0.0, _r(np.sqrt(_r(1 - a_prev)))))
  return t.astype(np.int64), coefs, 1.0


def lcm_step(cfg, c, out, x, noise):
  pred = cfg["prediction_type"]
  if pred == "epsilon":
    x0 = (x - c["sb"] * out) / c["sa"]
  elif pred == "sample":
    x0 = out
  else:  # v_prediction
    x0 = c["sa"] * x - c["sb"] * out
  if cfg["clip_sample"]:
    x0 = x0.clip(-cfg["clip_sample_range"], cfg["clip_sample_range"])
  denoised = c["c_out"] * x0 + c["c_skip"] * x
  return c["sa_prev"] * denoised + c["sb_prev"] * noise
