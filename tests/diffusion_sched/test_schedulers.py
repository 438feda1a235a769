"""Our JAX samplers vs diffusers' PyTorch schedulers built from the same config dict."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax.diffusion import schedulers
from synth_jax.errors import ConfigError

SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
      "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": False,
      "clip_sample": False}
CLASSES = {"ddim": "DDIMScheduler", "dpm++2m": "DPMSolverMultistepScheduler",
           "euler": "EulerDiscreteScheduler"}
CASES = [(k, p, s, n, {}) for k in CLASSES for p in ("epsilon", "v_prediction")
         for s, n in (("leading", 10), ("trailing", 7), ("linspace", 20))]
EXTRA = [  # the options beyond the defaults, one case each
    ("ddim", "sample", "leading", 10, {}),
    ("ddim", "epsilon", "leading", 10, {"clip_sample": True, "clip_sample_range": 2.0}),
    ("ddim", "v_prediction", "trailing", 10, {"set_alpha_to_one": True, "beta_schedule": "linear",
                                              "beta_start": 0.0001, "beta_end": 0.02}),
    ("dpm++2m", "sample", "linspace", 10, {}),
    ("dpm++2m", "epsilon", "leading", 25, {}),  # >= 15 steps: second order up to the last step
    ("dpm++2m", "epsilon", "linspace", 20, {"final_sigmas_type": "sigma_min"}),
    ("dpm++2m", "epsilon", "linspace", 20, {"final_sigmas_type": "sigma_min",
                                            "lower_order_final": False}),
    ("dpm++2m", "epsilon", "linspace", 12, {"solver_type": "heun"}),
    ("dpm++2m", "epsilon", "linspace", 12, {"solver_order": 1}),
    ("dpm++2m", "epsilon", "linspace", 12, {"use_karras_sigmas": True}),
    ("dpm++2m", "v_prediction", "trailing", 10, {"rescale_betas_zero_snr": True}),
    ("dpm++2m", "epsilon", "linspace", 10, {"beta_schedule": "squaredcos_cap_v2"}),
    ("dpm++2m", "epsilon", "linspace", 10, {"beta_schedule": "squaredcos_cap_v2",
                                            "lambda_min_clipped": -5.1}),
    ("dpm++2m", "epsilon", "linspace", 16, {"final_sigmas_type": "sigma_min",
                                            "euler_at_final": True}),
    ("ddim", "v_prediction", "trailing", 10, {"rescale_betas_zero_snr": True}),
    ("euler", "v_prediction", "trailing", 10, {"rescale_betas_zero_snr": True}),
    ("euler", "original_sample", "linspace", 10, {}),
    ("euler", "epsilon", "linspace", 12, {"use_karras_sigmas": True}),
    ("euler", "v_prediction", "leading", 10, {"final_sigmas_type": "sigma_min"}),
]


def _fake_model(x, t):
  """A deterministic stand-in for the UNet, computed in float32 in both frameworks."""
  return (0.3 * x + 0.1 * np.sin(np.float32(t) / np.float32(100))).astype(np.float32)


def _torch_loop(kind, config, n, x):
  import diffusers
  import torch
  sched = getattr(diffusers, CLASSES[kind]).from_config(config)
  sched.set_timesteps(n)
  x = torch.from_numpy(x) * sched.init_noise_sigma
  for t in sched.timesteps:
    inp = sched.scale_model_input(x, t)
    x = sched.step(torch.from_numpy(_fake_model(inp.numpy(), float(t))), t, x).prev_sample
  return sched.timesteps.numpy(), x.numpy()


def _jax_loop(sched, plan, x):
  def body(i, carry):
    x, state = carry
    inp = sched.scale_model_input(plan, i, x)
    out = 0.3 * inp + 0.1 * jnp.sin(plan.timesteps[i].astype(jnp.float32) / 100.0)
    return sched.step(plan, i, out, x, state)

  @jax.jit
  def loop(x):
    x = x * plan.init_noise_sigma
    return jax.lax.fori_loop(0, plan.num_steps, body, (x, sched.init_state(plan, x.shape)))[0]
  return np.asarray(loop(x))


@pytest.mark.parametrize("kind,pred,spacing,n,extra", CASES + EXTRA)
def test_loop_matches_diffusers(kind, pred, spacing, n, extra):
  config = dict(SD, prediction_type=pred, timestep_spacing=spacing, **extra)
  x = np.random.default_rng(0).standard_normal((2, 4, 4, 4)).astype(np.float32)
  ref_t, ref = _torch_loop(kind, config, n, x)
  sched = schedulers.from_config(config, kind)
  plan = sched.plan(n)
  assert plan.timesteps.dtype == (jnp.float32 if kind == "euler" else jnp.int32)
  if extra.get("use_karras_sigmas") and kind == "euler":
    # Fractional timesteps from log-sigma interpolation: torch's float32 sqrt is not correctly
    # rounded (ours is), so the last digits differ.
    np.testing.assert_allclose(np.asarray(plan.timesteps), ref_t, rtol=1e-6)
  else:
    np.testing.assert_array_equal(np.asarray(plan.timesteps), ref_t.astype(plan.timesteps.dtype))
  diff = float(np.abs(_jax_loop(sched, plan, x) - ref).max())
  # float32 resolves ~1e-6 of the largest magnitude along the trajectory: the start
  # (init_noise_sigma reaches 4096 with zero-terminal-SNR Euler) or the end.
  scale = max(1.0, float(np.abs(ref).max()), plan.init_noise_sigma * float(np.abs(x).max()))
  print(f"{kind} {pred} {spacing} n={n} {extra}: max abs diff {diff:.2e} (|ref| <= {scale:.1f})")
  # 1e-5 absolute at unit scale; the fake model drives epsilon runs to |x| ~ 13 (and the cosine
  # schedule to 1.5e4).
  assert diff <= 1e-5 * scale


@pytest.mark.parametrize("kind", list(CLASSES))
def test_defaults_are_diffusers_defaults(kind):
  import diffusers
  params = inspect.signature(getattr(diffusers, CLASSES[kind]).__init__).parameters
  theirs = {k: p.default for k, p in params.items() if k != "self"}
  assert schedulers.DEFAULTS[kind] == theirs


@pytest.mark.parametrize("kind", list(CLASSES))
def test_timesteps_for_many_step_counts(kind):
  """Every spacing, 1..60 steps (and 61: trailing gives 62 there, as in diffusers)."""
  import diffusers
  for spacing in ("leading", "trailing", "linspace"):
    config = dict(SD, timestep_spacing=spacing)
    ref = getattr(diffusers, CLASSES[kind]).from_config(config)
    sched = schedulers.from_config(config, kind)
    for n in list(range(1, 61, 3)) + [61]:
      ref.set_timesteps(n)
      got = np.asarray(sched.plan(n).timesteps)
      np.testing.assert_array_equal(got, ref.timesteps.numpy().astype(got.dtype), f"{spacing} {n}")


def test_class_name_picks_the_kind_and_other_classes_keep_their_betas():
  import diffusers
  pndm = dict(SD, _class_name="PNDMScheduler", skip_prk_steps=True, timestep_spacing="leading")
  assert schedulers.from_config({**SD, "_class_name": "DDIMScheduler"}).kind == "ddim"
  assert schedulers.from_config({**SD, "_class_name": "EulerDiscreteScheduler"}).kind == "euler"
  sched = schedulers.from_config(pndm)
  assert sched.kind == "dpm++2m" and sched.config["beta_schedule"] == "scaled_linear"
  ref = diffusers.DPMSolverMultistepScheduler.from_config(pndm)
  ref.set_timesteps(25)
  np.testing.assert_array_equal(np.asarray(sched.plan(25).timesteps), ref.timesteps.numpy())
  override = schedulers.from_config(pndm, "euler", timestep_spacing="trailing")
  assert override.config["timestep_spacing"] == "trailing"


def test_add_noise_and_velocity_match_ddpm():
  import diffusers
  import torch
  for config in (SD, {}):
    ddpm = diffusers.DDPMScheduler.from_config(config)
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((3, 4, 4, 4), np.float32)
    noise = rng.standard_normal((3, 4, 4, 4), np.float32)
    t = np.array([0, 500, 999])
    args = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)
    noisy = jax.jit(lambda *a: schedulers.add_noise(config, *a))(x0, noise, t)
    v = schedulers.velocity(config, x0, noise, jnp.asarray(t, jnp.int32))
    assert float(np.abs(noisy - ddpm.add_noise(*args).numpy()).max()) <= 1e-6
    assert float(np.abs(v - ddpm.get_velocity(*args).numpy()).max()) <= 1e-6
  v_config = dict(SD, prediction_type="v_prediction")
  np.testing.assert_array_equal(schedulers.training_target(v_config, x0, noise, t),
                                schedulers.velocity(v_config, x0, noise, t))
  assert schedulers.training_target(SD, x0, noise, t) is noise
  with pytest.raises(ConfigError, match="prediction_type='sample'"):
    schedulers.training_target(dict(SD, prediction_type="sample"), x0, noise, t)


def test_traced_step_index_compiles_once():
  for kind in CLASSES:
    sched = schedulers.from_config(SD, kind)
    plan = sched.plan(5)
    traces = []

    @jax.jit
    def one(i, x, state):
      traces.append(1)  # runs only while tracing
      return sched.step(plan, i, sched.scale_model_input(plan, i, x) * 0.5, x, state)
    x = jnp.ones((1, 2, 2, 4))
    state = sched.init_state(plan, x.shape)
    outs = [one(jnp.int32(i), x, state)[0] for i in range(5)]
    assert len(traces) == 1, kind
    assert not np.allclose(outs[0], outs[1]), kind  # the index really selects the coefficients


def test_plan_is_a_pytree_of_arrays():
  plan = schedulers.from_config(SD, "euler").plan(4)
  leaves = jax.tree_util.tree_leaves(plan)
  assert leaves and all(isinstance(l, jax.Array) for l in leaves)
  assert isinstance(plan.init_noise_sigma, float) and plan.init_noise_sigma > 10
  doubled = jax.jit(lambda p: jax.tree_util.tree_map(lambda a: a * 2, p))(plan)
  assert doubled.init_noise_sigma == plan.init_noise_sigma


def test_bad_kind_and_options_are_named():
  with pytest.raises(ConfigError, match=r"scheduler='pndm' is not one of dpm\+\+2m, ddim, euler"):
    schedulers.from_config(SD, "pndm")
  with pytest.raises(ConfigError, match="algorithm_type='sde-dpmsolver\\+\\+'"):
    schedulers.from_config(dict(SD, algorithm_type="sde-dpmsolver++"), "dpm++2m")
  with pytest.raises(ConfigError, match="thresholding=True"):
    schedulers.from_config(SD, "ddim", thresholding=True)
  with pytest.raises(ConfigError, match="'solver_order' is not an option of the euler"):
    schedulers.from_config(SD, "euler", solver_order=2)
  with pytest.raises(ConfigError, match="timestep_spacing='even'"):
    schedulers.from_config(SD, "ddim", timestep_spacing="even")
  with pytest.raises(ConfigError, match="steps=0"):
    schedulers.from_config(SD, "ddim").plan(0)
  with pytest.raises(ConfigError, match="beta_schedule='cosine'"):
    schedulers.from_config(dict(SD, beta_schedule="cosine"), "ddim").plan(4)
