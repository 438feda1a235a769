"""Our coefficient-table schedulers vs diffusers' PyTorch schedulers of the same config."""
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
CASES = [(k, p, s, n) for k in CLASSES for p in ("epsilon", "v_prediction")
         for s, n in (("leading", 10), ("trailing", 7), ("linspace", 20))]


def _fake_model(x, t):
  return 0.3 * x + 0.1 * np.sin(np.asarray(t, np.float32) / 100.0)


def _torch_loop(kind, config, n, x):
  import diffusers
  import torch
  sched = getattr(diffusers, CLASSES[kind]).from_config(config)
  sched.set_timesteps(n)
  x = torch.from_numpy(x) * sched.init_noise_sigma
  for t in sched.timesteps:
    inp = sched.scale_model_input(x, t)
    out = torch.from_numpy(_fake_model(inp.numpy(), float(t)).astype(np.float32))
    x = sched.step(out, t, x).prev_sample
  return sched.timesteps.numpy(), x.numpy()


@pytest.mark.parametrize("kind,pred,spacing,n", CASES)
def test_loop_matches_diffusers(kind, pred, spacing, n):
  config = dict(SD, prediction_type=pred, timestep_spacing=spacing)
  x = np.random.default_rng(0).standard_normal((2, 4, 4, 4)).astype(np.float32)
  ref_t, ref = _torch_loop(kind, config, n, x)
  sched = schedulers.from_config(config, kind)
  plan = sched.plan(n)
  np.testing.assert_array_equal(np.asarray(plan.timesteps), ref_t.astype(np.float32))

  @jax.jit
  def loop(x):
    def body(i, carry):
      x, state = carry
      inp = sched.scale_model_input(plan, i, x)
      out = 0.3 * inp + 0.1 * jnp.sin(plan.timesteps[i] / 100.0)
      return sched.step(plan, i, out, x, state)
    x = x * plan.init_noise_sigma
    return jax.lax.fori_loop(0, n, body, (x, sched.init_state(plan, x.shape)))[0]
  diff = float(np.abs(np.asarray(loop(x)) - ref).max())
  print(f"{kind} {pred} {spacing} n={n}: max abs diff {diff:.2e}")
  assert diff <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_add_noise_and_velocity_match_ddpm():
  import diffusers
  import torch
  ddpm = diffusers.DDPMScheduler.from_config(SD)
  rng = np.random.default_rng(1)
  x0, noise = rng.standard_normal((3, 4, 4, 4), np.float32), rng.standard_normal((3, 4, 4, 4),
                                                                                    np.float32)
  t = np.array([0, 500, 999])
  ref_noisy = ddpm.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t))
  ref_v = ddpm.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t))
  np.testing.assert_allclose(schedulers.add_noise(SD, x0, noise, t), ref_noisy.numpy(), atol=1e-6)
  np.testing.assert_allclose(schedulers.velocity(SD, x0, noise, t), ref_v.numpy(), atol=1e-6)


def test_traced_step_index_compiles_once():
  sched = schedulers.from_config(SD, "dpm++2m")
  plan = sched.plan(5)
  traces = []

  @jax.jit
  def one(i, x, state):
    traces.append(1)
    return sched.step(plan, i, x * 0.5, x, state)
  x = jnp.ones((1, 2, 2, 4))
  for i in range(5):
    one(i, x, x)
  assert len(traces) == 1


def test_bad_kind_and_options_are_named():
  with pytest.raises(ConfigError, match="scheduler='pndm' is not one of dpm\\+\\+2m, ddim, euler"):
    schedulers.from_config(SD, "pndm")
  with pytest.raises(ConfigError, match="use_karras_sigmas"):
    schedulers.from_config(dict(SD, use_karras_sigmas=True), "euler")
  assert schedulers.from_config({**SD, "_class_name": "DDIMScheduler"}).kind == "ddim"
