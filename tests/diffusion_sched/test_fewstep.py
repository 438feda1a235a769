"""Euler ancestral and LCM vs diffusers' schedulers, fed the same per-step noise."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax.diffusion import schedulers
from synth_jax.errors import ConfigError
from tests.diffusion_sched.test_schedulers import SD, _fake_model

CLASSES = {"euler_a": "EulerAncestralDiscreteScheduler", "lcm": "LCMScheduler"}
MODULES = {"euler_a": "scheduling_euler_ancestral_discrete", "lcm": "scheduling_lcm"}
CASES = [("euler_a", p, s, n, {}) for p in ("epsilon", "v_prediction")
         for s, n in (("leading", 10), ("trailing", 4), ("trailing", 1), ("linspace", 20))]
CASES += [("lcm", p, "leading", n, {}) for p in ("epsilon", "v_prediction", "sample")
          for n in (1, 4, 8)]
CASES += [("euler_a", "v_prediction", "trailing", 10, {"rescale_betas_zero_snr": True}),
          ("lcm", "epsilon", "leading", 6, {"set_alpha_to_one": True, "clip_sample": True,
                                            "original_inference_steps": 20})]


def _torch_loop(kind, config, n, x, noises, monkeypatch):
  import diffusers
  import torch
  module = getattr(diffusers.schedulers, MODULES[kind])
  it = iter(noises)
  monkeypatch.setattr(module, "randn_tensor", lambda *a, **k: torch.from_numpy(next(it)))
  sched = getattr(diffusers, CLASSES[kind]).from_config(config)
  sched.set_timesteps(n)
  x = torch.from_numpy(x) * sched.init_noise_sigma
  for t in sched.timesteps:
    inp = sched.scale_model_input(x, t)
    x = sched.step(torch.from_numpy(_fake_model(inp.numpy(), float(t))), t, x).prev_sample
  return sched.timesteps.numpy(), x.numpy()


def _jax_loop(sched, plan, x, noises):
  noises = jnp.asarray(noises)

  def body(i, carry):
    x, state = carry
    inp = sched.scale_model_input(plan, i, x)
    out = 0.3 * inp + 0.1 * jnp.sin(plan.timesteps[i].astype(jnp.float32) / 100.0)
    return sched.step(plan, i, out, x, state, noise=noises[i])

  @jax.jit
  def loop(x):
    x = x * plan.init_noise_sigma
    return jax.lax.fori_loop(0, plan.num_steps, body, (x, sched.init_state(plan, x.shape)))[0]
  return np.asarray(loop(x))


@pytest.mark.parametrize("kind,pred,spacing,n,extra", CASES)
def test_loop_matches_diffusers_with_the_same_noise(kind, pred, spacing, n, extra, monkeypatch):
  config = dict(SD, prediction_type=pred, timestep_spacing=spacing, **extra)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
  noises = rng.standard_normal((n, 2, 4, 4, 4)).astype(np.float32)
  ref_t, ref = _torch_loop(kind, config, n, x, noises, monkeypatch)
  sched = schedulers.from_config(config, kind)
  assert sched.stochastic
  plan = sched.plan(n)
  np.testing.assert_array_equal(np.asarray(plan.timesteps), ref_t.astype(plan.timesteps.dtype))
  diff = float(np.abs(_jax_loop(sched, plan, x, noises) - ref).max())
  scale = max(1.0, float(np.abs(ref).max()), plan.init_noise_sigma * float(np.abs(x).max()))
  print(f"{kind} {pred} {spacing} n={n} {extra}: max abs diff {diff:.2e} (|ref| <= {scale:.1f})")
  assert diff <= 1e-5 * scale
  # the noise really enters: other noise, other result (the last step adds none, so 1 step has none)
  if n > 1:
    assert float(np.abs(_jax_loop(sched, plan, x, -noises) - ref).max()) > 1e-3


@pytest.mark.parametrize("kind", list(CLASSES))
def test_defaults_are_diffusers_defaults(kind):
  import diffusers
  params = inspect.signature(getattr(diffusers, CLASSES[kind]).__init__).parameters
  theirs = {k: p.default for k, p in params.items() if k != "self"}
  assert schedulers.DEFAULTS[kind] == theirs


@pytest.mark.parametrize("kind", list(CLASSES))
def test_timesteps_for_many_step_counts(kind):
  import diffusers
  for spacing in ("leading", "trailing", "linspace"):
    config = dict(SD, timestep_spacing=spacing)
    ref = getattr(diffusers, CLASSES[kind]).from_config(config)
    sched = schedulers.from_config(config, kind)
    for n in list(range(1, 50, 3)) + [50]:
      ref.set_timesteps(n)
      got = np.asarray(sched.plan(n).timesteps)
      np.testing.assert_array_equal(got, ref.timesteps.numpy().astype(got.dtype), f"{spacing} {n}")


def test_class_names_and_bad_values():
  assert schedulers.from_config({**SD, "_class_name": "LCMScheduler"}).kind == "lcm"
  assert schedulers.from_config(
      {**SD, "_class_name": "EulerAncestralDiscreteScheduler"}).kind == "euler_a"
  with pytest.raises(ConfigError, match="steps=60 exceeds the LCM scheduler's "
                                        "original_inference_steps=50"):
    schedulers.from_config(SD, "lcm").plan(60)
  with pytest.raises(ConfigError, match="prediction_type='sample' is not supported by the euler_a"):
    schedulers.from_config(SD, "euler_a", prediction_type="sample")
  sched = schedulers.from_config(SD, "euler_a")
  with pytest.raises(ValueError, match="noise="):
    sched.step(sched.plan(2), 0, jnp.ones((1, 2, 2, 4)), jnp.ones((1, 2, 2, 4)), jnp.zeros(()))
