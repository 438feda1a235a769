"""Host-side numpy halves of the samplers: noise schedules, timestep spacings and sigma tables.

Everything here follows diffusers 0.42's `__init__`/`set_timesteps` expression for expression, in
the same float precision (torch computes the schedule in float32; its CPU `cumprod` accumulates in
double), so timesteps come out identical and coefficients differ from diffusers' by an ulp at most.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from synth_jax.errors import ConfigError

F32 = np.float32


def _torch_linspace(start: float, end: float, n: int) -> np.ndarray:
  """torch.linspace(..., dtype=float32) bit for bit: a float32 step, each half counted from its
  own end with one fused multiply-add (emulated in double, which is exact for these operands)."""
  s, e = F32(start), F32(end)
  step = np.float64((e - s) / F32(max(n - 1, 1)))
  i = np.arange(n, dtype=np.float64)
  lo = np.float64(s) + step * i
  hi = np.float64(e) - step * (n - 1 - i)
  return np.where(i < n // 2, lo, hi).astype(F32)


def _cosine_betas(n: int) -> np.ndarray:
  """diffusers' betas_for_alpha_bar (Glide's squaredcos_cap_v2), python floats then float32."""
  fn = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
  return np.array([min(1 - fn((i + 1) / n) / fn(i / n), 0.999) for i in range(n)], F32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """diffusers' rescale_zero_terminal_snr (Lin et al. 2023), in float32 like torch."""
  sqrt_ac = np.sqrt(np.cumprod((F32(1) - betas).astype(np.float64)).astype(F32))
  a0, at = sqrt_ac[0], sqrt_ac[-1]
  sqrt_ac = (sqrt_ac - at) * (a0 / (a0 - at))
  ac = sqrt_ac ** 2
  alphas = np.concatenate([ac[:1], ac[1:] / ac[:-1]])
  return (F32(1) - alphas).astype(F32)


def betas(cfg: Mapping[str, Any]) -> np.ndarray:
  """The training betas (float32) of a resolved scheduler config."""
  n = int(cfg["num_train_timesteps"])
  schedule = cfg["beta_schedule"]
  if cfg.get("trained_betas") is not None:
    b = np.asarray(cfg["trained_betas"], F32)
  elif schedule == "linear":
    b = _torch_linspace(cfg["beta_start"], cfg["beta_end"], n)
  elif schedule == "scaled_linear":  # the latent-diffusion schedule: linear in sqrt(beta)
    b = (_torch_linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n) ** 2).astype(F32)
  elif schedule == "squaredcos_cap_v2":
    b = _cosine_betas(n)
  else:
    raise ConfigError(f"beta_schedule={schedule!r} is not supported; use linear, scaled_linear "
                      "or squaredcos_cap_v2")
  if cfg.get("rescale_betas_zero_snr"):
    b = _rescale_zero_terminal_snr(b)
  return b


def alphas_cumprod(cfg: Mapping[str, Any], kind: str | None = None) -> np.ndarray:
  """float32 cumulative product of (1 - beta), accumulated in double as torch's CPU cumprod is.

  With zero-terminal-SNR betas, DPM-Solver and Euler lift the last value to 2**-24 (as diffusers
  does) so that the first sigma is finite.
  """
  ac = np.cumprod((F32(1) - betas(cfg)).astype(np.float64)).astype(F32)
  if cfg.get("rescale_betas_zero_snr") and kind in ("dpm++2m", "euler"):
    ac[-1] = 2.0 ** -24
  return ac


def train_sigmas(ac: np.ndarray) -> np.ndarray:
  """Karras-style sigmas sqrt((1 - a) / a) per training timestep, float32 as in diffusers."""
  with np.errstate(divide="ignore"):
    return np.sqrt((F32(1) - ac) / ac).astype(F32)  # torch: x ** 0.5 is sqrt


def spaced_timesteps(cfg: Mapping[str, Any], n: int, kind: str) -> np.ndarray:
  """`set_timesteps(n)` timesteps of diffusers' DDIM / DPM-Solver / Euler (they differ subtly).

  DPM-Solver spaces n + 1 points and drops the last; Euler keeps float32 (fractional) linspace
  timesteps. 'trailing' yields n + 1 timesteps for some n (e.g. 61), as diffusers does.
  """
  total, spacing = int(cfg["num_train_timesteps"]), cfg["timestep_spacing"]
  offset = int(cfg.get("steps_offset", 0))
  last, extra = total, 0
  if kind == "dpm++2m":
    lam = _lambdas(alphas_cumprod(cfg, kind))
    clipped = int(np.searchsorted(lam[::-1], cfg["lambda_min_clipped"]))
    last, extra = total - clipped, 1
  if spacing == "linspace":
    if kind == "euler":
      return np.linspace(0, total - 1, n, dtype=F32)[::-1].copy()
    t = np.linspace(0, last - 1, n + extra).round()[::-1]
    return (t[:-1] if extra else t).astype(np.int64)
  if spacing == "leading":
    ratio = last // (n + extra)
    t = (np.arange(0, n + extra) * ratio).round()[::-1]
    t = (t[:-1] if extra else t).copy()
    return (t.astype(F32) if kind == "euler" else t.astype(np.int64)) + offset
  if spacing == "trailing":
    t = np.arange(last, 0, -total / n).round()
    return (t.astype(F32) if kind == "euler" else t.astype(np.int64)) - 1
  raise ConfigError(f"timestep_spacing={spacing!r} is not supported; use linspace, leading or "
                    "trailing")


def _lambdas(ac: np.ndarray) -> np.ndarray:
  """log(alpha_t) - log(sigma_t) per training timestep (DPM-Solver's half-log-SNR)."""
  ac = ac.astype(F32)
  with np.errstate(divide="ignore"):
    return (np.log(np.sqrt(ac)) - np.log(np.sqrt(F32(1) - ac))).astype(F32)


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
  """diffusers' `_sigma_to_t`: a (fractional) timestep per sigma by log-sigma interpolation."""
  sigma = np.asarray(sigma)
  log_sigma = np.log(np.maximum(sigma, 1e-10))
  dists = log_sigma - log_sigmas[:, np.newaxis]
  low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
  high = low + 1
  w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
  return ((1 - w) * low + w * high).reshape(sigma.shape)


def karras(in_sigmas: np.ndarray, n: int, sigma_min=None, sigma_max=None) -> np.ndarray:
  """Karras et al. (2022) rho=7 sigmas between the given ends (diffusers' `_convert_to_karras`)."""
  lo = sigma_min if sigma_min is not None else float(in_sigmas[-1])
  hi = sigma_max if sigma_max is not None else float(in_sigmas[0])
  rho = 7.0
  ramp = np.linspace(0, 1, n)
  return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def sampling_sigmas(cfg: Mapping[str, Any], n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
  """(timesteps, float32 sigmas of length len(timesteps) + 1) for DPM-Solver and Euler."""
  ac = alphas_cumprod(cfg, kind)
  t = spaced_timesteps(cfg, n, kind)
  sig = train_sigmas(ac)
  log_sig = np.log(sig)
  if kind == "euler":
    sig = np.interp(t, np.arange(len(sig)), sig)
    if cfg["use_karras_sigmas"]:
      sig = karras(sig, n, cfg.get("sigma_min"), cfg.get("sigma_max"))
      t = np.array([sigma_to_t(s, log_sig) for s in sig])
  elif cfg["use_karras_sigmas"]:  # DPM: Karras from the full training range, rounded timesteps
    sig = karras(np.flip(sig).copy(), n)
    t = np.array([sigma_to_t(s, log_sig) for s in sig])
    if cfg["beta_schedule"] != "squaredcos_cap_v2":
      t = t.round()
    t = t.astype(np.int64)
  else:
    sig = np.interp(t, np.arange(len(sig)), sig)
  if cfg["final_sigmas_type"] == "sigma_min":
    last = float(np.sqrt((F32(1) - ac[0]) / ac[0]))
  elif cfg["final_sigmas_type"] == "zero":
    last = 0.0
  else:
    raise ConfigError(f"final_sigmas_type={cfg['final_sigmas_type']!r} is not supported; use "
                      "'zero' or 'sigma_min'")
  return t, np.concatenate([sig, [last]]).astype(F32)
