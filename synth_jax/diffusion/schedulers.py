"""DDIM, DPM-Solver++ (2M), Euler, Euler ancestral and LCM samplers in pure JAX, plus the DDPM forward process.

`plan(num_steps)` runs diffusers' `set_timesteps` on the host and tabulates every per-step scalar
(float32, computed as diffusers' torch code computes it); `step(plan, i, ...)` indexes those tables
with a traced step number and applies diffusers' update formula in the same operation order. There
is no Python state, so a whole sampling loop is one `lax.fori_loop` and compiles once:

  sched = from_config(pipe.scheduler_config, "dpm++2m")
  plan = sched.plan(25)
  x = x * plan.init_noise_sigma; state = sched.init_state(plan, x.shape)
  for i in range(plan.num_steps):  # or lax.fori_loop
    out = unet(sched.scale_model_input(plan, i, x), plan.timesteps[i])
    x, state = sched.step(plan, i, out, x, state)

Limits: DDIM is deterministic (eta = 0); DPM-Solver is the `dpmsolver++` algorithm of order 1 or 2
(midpoint or heun); no dynamic thresholding; Karras sigmas for DPM-Solver and Euler.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax.diffusion import schedulers_fewstep as fewstep
from synth_jax.diffusion import schedulers_tables as tables
from synth_jax.errors import ConfigError

F32 = np.float32
KINDS = ("dpm++2m", "ddim", "euler", "euler_a", "lcm")
_BY_CLASS = {"DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm++2m",
             "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler_a",
             "LCMScheduler": "lcm"}
STOCHASTIC = ("euler_a", "lcm")  # fresh noise every step: `step` takes `noise`
_NOISE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
              trained_betas=None, rescale_betas_zero_snr=False, steps_offset=0)
# diffusers 0.42's constructor defaults per class (tests check them against the signatures).
DEFAULTS = {
    "ddim": dict(_NOISE, prediction_type="epsilon", timestep_spacing="leading", clip_sample=True,
                 set_alpha_to_one=True, thresholding=False, dynamic_thresholding_ratio=0.995,
                 clip_sample_range=1.0, sample_max_value=1.0),
    "dpm++2m": dict(_NOISE, prediction_type="epsilon", timestep_spacing="linspace",
                    solver_order=2, thresholding=False, dynamic_thresholding_ratio=0.995,
                    sample_max_value=1.0, algorithm_type="dpmsolver++", solver_type="midpoint",
                    lower_order_final=True, euler_at_final=False, use_karras_sigmas=False,
                    use_exponential_sigmas=False, use_beta_sigmas=False, use_lu_lambdas=False,
                    use_flow_sigmas=False, flow_shift=1.0, final_sigmas_type="zero",
                    lambda_min_clipped=-float("inf"), variance_type=None,
                    use_dynamic_shifting=False, time_shift_type="exponential"),
    "euler": dict(_NOISE, prediction_type="epsilon", timestep_spacing="linspace",
                  interpolation_type="linear", use_karras_sigmas=False,
                  use_exponential_sigmas=False, use_beta_sigmas=False, sigma_min=None,
                  sigma_max=None, timestep_type="discrete", final_sigmas_type="zero"),
    **fewstep.DEFAULTS,
}
# Values we implement, per option; anything else is refused by name rather than half-supported.
_ALLOWED = {
    "prediction_type": {"ddim": ("epsilon", "v_prediction", "sample"),
                        "dpm++2m": ("epsilon", "v_prediction", "sample"),
                        "euler": ("epsilon", "v_prediction", "sample", "original_sample"),
                        **fewstep.PREDICTIONS},
    "thresholding": (False,), "algorithm_type": ("dpmsolver++", "deis"), "solver_order": (1, 2),
    "solver_type": ("midpoint", "heun", "logrho", "bh1", "bh2"),
    "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,), "use_lu_lambdas": (False,),
    "use_flow_sigmas": (False,), "use_dynamic_shifting": (False,), "variance_type": (None,),
    "interpolation_type": ("linear",), "timestep_type": ("discrete",),
    "timestep_spacing": ("leading", "trailing", "linspace"),
    "final_sigmas_type": ("zero", "sigma_min"),
}


def resolve_config(scheduler_config: Mapping[str, Any], kind: str,
                   overrides: Mapping[str, Any] | None = None) -> dict:
  """diffusers' `from_config`: the class defaults, updated by the keys it knows, then overrides.

  Keys of another class's config (e.g. PNDM's `skip_prk_steps`) are ignored as diffusers does;
  an override key the scheduler does not have is an error.
  """
  defaults = DEFAULTS[kind]
  cfg = dict(defaults)
  cfg.update({k: v for k, v in dict(scheduler_config).items() if k in defaults})
  for key, value in (overrides or {}).items():
    if key not in defaults:
      raise ConfigError(f"scheduler override {key!r} is not an option of the {kind} scheduler; "
                        f"use one of {', '.join(sorted(defaults))}")
    cfg[key] = value
  for key, allowed in _ALLOWED.items():
    allowed = allowed[kind] if isinstance(allowed, dict) else allowed
    if key in cfg and cfg[key] not in allowed:
      raise ConfigError(f"scheduler option {key}={cfg[key]!r} is not supported by the {kind} "
                        f"sampler; use one of {', '.join(map(repr, allowed))}")
  if kind == "euler" and cfg["rescale_betas_zero_snr"] and cfg["use_karras_sigmas"]:
    raise ConfigError("rescale_betas_zero_snr=True with use_karras_sigmas=True is not supported "
                      "(an infinite sigma); set use_karras_sigmas=False")
  return cfg


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Plan:
  """One sampling schedule: tables of length num_steps (a pytree of jnp arrays).

  timesteps: what the UNet is given; int32 for DDIM/DPM-Solver, float32 for Euler (diffusers
    feeds Euler's fractional timesteps to the UNet too).
  coefs: per-step float32 scalars, keyed by name (scheduler-specific).
  init_noise_sigma: the starting latents' scale (a static float: 1.0 except for Euler).
  """
  timesteps: jax.Array
  coefs: dict
  init_noise_sigma: float = dataclasses.field(default=1.0, metadata=dict(static=True))

  @property
  def num_steps(self) -> int:
    return int(self.timesteps.shape[0])


@dataclasses.dataclass(frozen=True)
class Scheduler:
  """A sampler for one resolved config; see the module docstring for the loop."""
  kind: str
  config: dict

  @property
  def prediction_type(self) -> str:
    return self.config["prediction_type"]

  def plan(self, num_steps: int) -> Plan:
    """Timesteps and per-step tables for `num_steps` steps (host-side, then jnp)."""
    if int(num_steps) < 1 or int(num_steps) > self.config["num_train_timesteps"]:
      raise ConfigError(f"steps={num_steps} must be in 1..{self.config['num_train_timesteps']}")
    build = {"ddim": _ddim_plan, "dpm++2m": _dpm_plan, "euler": _euler_plan,
             "euler_a": fewstep.euler_a_plan, "lcm": fewstep.lcm_plan}[self.kind]
    timesteps, coefs, sigma = build(self.config, int(num_steps))
    t_dtype = jnp.float32 if self.kind in ("euler", "euler_a") else jnp.int32
    return Plan(jnp.asarray(timesteps, t_dtype),
                {k: jnp.asarray(np.asarray(v, F32)) for k, v in coefs.items()}, float(sigma))

  def init_state(self, plan: Plan, shape, dtype=jnp.float32):
    """2M: the previous data prediction (unused at step 0). Others carry a dummy scalar."""
    return jnp.zeros(shape if self.kind == "dpm++2m" else (), dtype)

  def scale_model_input(self, plan: Plan, i, x):
    """The UNet input at step i: x itself, except Euler's x / sqrt(sigma^2 + 1)."""
    if self.kind not in ("euler", "euler_a"):
      return x
    return (x.astype(jnp.float32) / plan.coefs["in_scale"][i]).astype(x.dtype)

  @property
  def stochastic(self) -> bool:
    """Whether `step` needs fresh N(0, 1) `noise` (shaped as x) at every step."""
    return self.kind in STOCHASTIC

  def step(self, plan: Plan, i, model_output, x, state, noise=None):
    """One update at (traced) step index i; returns (x_next, state). Computes in float32."""
    out, x32 = model_output.astype(jnp.float32), x.astype(jnp.float32)
    c = {k: v[i] for k, v in plan.coefs.items()}
    if self.stochastic:
      if noise is None:
        raise ValueError(f"the {self.kind} sampler adds noise every step: pass noise=")
      nxt = {"euler_a": fewstep.euler_a_step, "lcm": fewstep.lcm_step}[self.kind](
          self.config, c, out, x32, noise.astype(jnp.float32))
      return nxt.astype(x.dtype), state
    fn = {"ddim": _ddim_step, "dpm++2m": _dpm_step, "euler": _euler_step}[self.kind]
    nxt, state = fn(self.config, c, out, x32, state)
    return nxt.astype(x.dtype), state


def from_config(scheduler_config: Mapping[str, Any], kind: str | None = None,
                **overrides) -> Scheduler:
  """A scheduler from a diffusers `scheduler_config.json` dict.

  kind: one of KINDS ('euler_a': Euler ancestral); None takes it from `_class_name` (an unknown class, e.g.
  SD-1.5's PNDMScheduler, gives 'dpm++2m' with the same betas). overrides: diffusers option names.
  """
  if kind is None:
    kind = _BY_CLASS.get(dict(scheduler_config).get("_class_name"), "dpm++2m")
  if kind not in KINDS:
    raise ConfigError(f"scheduler={kind!r} is not one of {', '.join(KINDS)}")
  return Scheduler(kind, resolve_config(scheduler_config, kind, overrides))


# ---- DDPM forward process (training: textual inversion) -------------------------------------------
def train_alphas(scheduler_config: Mapping[str, Any]):
  """The training schedule's cumulative alphas (one per train timestep), from a scheduler config."""
  cfg = dict(_NOISE)
  cfg.update({k: v for k, v in dict(scheduler_config).items() if k in _NOISE})
  return jnp.asarray(tables.alphas_cumprod(cfg))


def _bcast(a, x):
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def add_noise(scheduler_config: Mapping[str, Any], x0, noise, t):
  """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise (DDPMScheduler.add_noise); t: (B,) int timesteps."""
  ac = train_alphas(scheduler_config)[jnp.asarray(t)].astype(x0.dtype)
  return _bcast(jnp.sqrt(ac), x0) * x0 + _bcast(jnp.sqrt(1 - ac), x0) * noise


def velocity(scheduler_config: Mapping[str, Any], x0, noise, t):
  """v = sqrt(a_t) noise - sqrt(1 - a_t) x0 (DDPMScheduler.get_velocity), the v-prediction target."""
  ac = train_alphas(scheduler_config)[jnp.asarray(t)].astype(x0.dtype)
  return _bcast(jnp.sqrt(ac), x0) * noise - _bcast(jnp.sqrt(1 - ac), x0) * x0


def training_target(scheduler_config: Mapping[str, Any], x0, noise, t):
  """What the UNet is trained to predict (diffusers' training scripts): noise or v."""
  pred = dict(scheduler_config).get("prediction_type", "epsilon")
  if pred == "epsilon":
    return noise
  if pred == "v_prediction":
    return velocity(scheduler_config, x0, noise, t)
  raise ConfigError(f"prediction_type={pred!r} cannot be trained here; use epsilon or v_prediction")


# ---- DDIM (eta = 0) ------------------------------------------------------------------------------
def _r(v):
  """Round to float32 but keep float64: chaining these reproduces torch's float32 scalar math
  (each op correctly rounded), which numpy's own float32 exp/log (a few ulp off) would not."""
  return np.asarray(v, np.float64).astype(F32).astype(np.float64)


def _ddim_plan(cfg, n):
  ac = tables.alphas_cumprod(cfg).astype(np.float64)
  t = tables.spaced_timesteps(cfg, n, "ddim")
  prev = t - cfg["num_train_timesteps"] // n  # diffusers' step: the requested n, not len(t)
  final = 1.0 if cfg["set_alpha_to_one"] else ac[0]
  a_t = ac[t]
  a_prev = np.where(prev >= 0, ac[np.clip(prev, 0, None)], final)
  coefs = dict(sa=_r(np.sqrt(a_t)), sb=_r(np.sqrt(_r(1 - a_t))), sa_prev=_r(np.sqrt(a_prev)),
               direction=_r(np.sqrt(_r(1 - a_prev))))
  return t, coefs, 1.0


def _ddim_step(cfg, c, out, x, state):
  pred = cfg["prediction_type"]
  if pred == "epsilon":
    x0, eps = (x - c["sb"] * out) / c["sa"], out
  elif pred == "sample":
    x0 = out
    eps = (x - c["sa"] * x0) / c["sb"]
  else:  # v_prediction
    x0, eps = c["sa"] * x - c["sb"] * out, c["sa"] * out + c["sb"] * x
  if cfg["clip_sample"]:
    x0 = jnp.clip(x0, -cfg["clip_sample_range"], cfg["clip_sample_range"])
  return c["sa_prev"] * x0 + c["direction"] * eps, state


# ---- DPM-Solver++ (1S/2M multistep) ----------------------------------------------------------------
def _dpm_plan(cfg, n):
  t, sig = tables.sampling_sigmas(cfg, n, "dpm++2m")
  steps, sig = len(t), sig.astype(np.float64)
  alpha = _r(1 / _r(np.sqrt(_r(_r(sig * sig) + 1))))
  sigma = _r(sig * alpha)
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    lam = _r(_r(np.log(alpha)) - _r(np.log(sigma)))  # +inf at a zero final sigma
    h = _r(lam[1:] - lam[:-1])
    em1 = _r(_r(np.exp(-h)) - 1)  # exp(-inf) - 1 = -1 at a zero final sigma
    phi = _r(alpha[1:] * em1)
    coefs = dict(alpha_s=alpha[:-1], sigma_s=sigma[:-1], ratio=_r(sigma[1:] / sigma[:-1]),
                 phi=phi, inv_r0=np.zeros(steps), c_d1=np.zeros(steps))
    for i in range(1, steps):
      final = i == steps - 1 and (cfg["euler_at_final"] or cfg["final_sigmas_type"] == "zero" or
                                  (cfg["lower_order_final"] and steps < 15))
      if cfg["solver_order"] == 2 and not final:  # second order: D1 = (m0 - m1) / r0
        coefs["inv_r0"][i] = _r(1 / _r(h[i - 1] / h[i]))
        coefs["c_d1"][i] = (-_r(0.5 * phi[i]) if cfg["solver_type"] != "heun"
                            else _r(alpha[i + 1] * _r(_r(em1[i] / h[i]) + 1)))
  return t, coefs, 1.0


def _dpm_step(cfg, c, out, x, prev_x0):
  pred = cfg["prediction_type"]
  if pred == "epsilon":
    x0 = (x - c["sigma_s"] * out) / c["alpha_s"]
  elif pred == "v_prediction":
    x0 = c["alpha_s"] * x - c["sigma_s"] * out
  else:
    x0 = out
  d1 = c["inv_r0"] * (x0 - prev_x0)  # zero coefficient on first-order steps
  nxt = c["ratio"] * x - c["phi"] * x0 + c["c_d1"] * d1
  return nxt, x0.astype(prev_x0.dtype)


# ---- Euler (discrete, no churn) ------------------------------------------------------------------
def _euler_plan(cfg, n):
  t, sig = tables.sampling_sigmas(cfg, n, "euler")
  sig = sig.astype(np.float64)
  s = sig[:-1]
  sq = _r(_r(s * s) + 1)
  root = _r(np.sqrt(sq))
  coefs = dict(sigma=s, dt=_r(sig[1:] - s), in_scale=root, v_out=_r(-s / root), v_skip=sq)
  top = sig.max()
  init = top if cfg["timestep_spacing"] in ("linspace", "trailing") else _r(np.sqrt(_r(top * top + 1)))
  return t.astype(F32), coefs, float(init)


def _euler_step(cfg, c, out, x, state):
  pred = cfg["prediction_type"]
  if pred == "epsilon":
    x0 = x - c["sigma"] * out
  elif pred == "v_prediction":
    x0 = out * c["v_out"] + x / c["v_skip"]
  else:
    x0 = out
  return x + (x - x0) / c["sigma"] * c["dt"], state
