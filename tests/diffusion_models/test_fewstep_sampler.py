"""Few-step sampling vs PyTorch diffusers' StableDiffusionPipeline: guidance <= 1, Euler ancestral
(the same per-step noise), SD-Turbo-style trailing 1/4-step sampling, LCM."""
import jax
import numpy as np
import pytest

from synth_jax import sharding
from synth_jax.diffusion import loading
from synth_jax.diffusion import sampler as sampler_lib
from tests.diffusion_io import helpers

PROMPTS = ["a photo of the cat", "a blurry sketch of a dog"]
CLASSES = {"euler_a": "EulerAncestralDiscreteScheduler", "lcm": "LCMScheduler",
           "dpm++2m": "DPMSolverMultistepScheduler"}
MODULES = {"euler_a": "scheduling_euler_ancestral_discrete", "lcm": "scheduling_lcm"}


@pytest.fixture(scope="module")
def torch_sd(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("fewstep") / "sd")
  pt = helpers.make_torch_pipeline(path, seed=6)
  pt.original_scheduler_config = dict(pt.scheduler.config)
  return path, pt


class _Spy:
  """Wraps the UNet module and records the batch size it is traced with."""

  def __init__(self, module):
    self.module, self.batches = module, []

  def apply(self, variables, x, *args, **kwargs):
    self.batches.append(x.shape[0])
    return self.module.apply(variables, x, *args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.module, name)


def _run(torch_sd, kind, steps, guidance, monkeypatch, negative="", overrides=None, seeds=(3, 9)):
  """(ours, diffusers', our sampler) uint8 images from the same latents and step noise."""
  import diffusers
  import torch
  path, pt = torch_sd
  overrides = overrides or {}
  # From the saved config, not pt.scheduler's: the pipeline is shared by the module's tests and an
  # earlier test's overrides (trailing spacing) must not carry into this one.
  base = getattr(pt, "original_scheduler_config", pt.scheduler.config)
  pt.scheduler = getattr(diffusers, CLASSES[kind]).from_config(base, **overrides)
  rng = np.random.default_rng(steps)
  latents = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  s = sampler_lib.Sampler(loading.load_pipeline(path), sharding.make_mesh(
      {"data": 1}, devices=jax.devices()[:1]), batch_size=2, num_steps=steps, scheduler=kind,
      scheduler_overrides=overrides)
  s.unet = _Spy(s.unet)
  if kind in MODULES:  # diffusers draws the step noise with randn_tensor: hand it ours
    count = iter(range(steps))
    noise = lambda *a, **k: torch.from_numpy(np.asarray(sampler_lib.step_noise(  # noqa: E731
        np.asarray(seeds, np.uint32), next(count), (8, 8, 4))).transpose(0, 3, 1, 2).copy())
    monkeypatch.setattr(getattr(diffusers.schedulers, MODULES[kind]), "randn_tensor", noise)
  ref = pt(PROMPTS, negative_prompt=[negative] * 2, num_inference_steps=steps,
           guidance_scale=guidance, height=16, width=16, latents=torch.from_numpy(latents),
           output_type="np").images
  ref = (ref * 255).round().astype(np.uint8)
  ours = s.sample_from_latents(PROMPTS, negative, latents.transpose(0, 2, 3, 1), guidance,
                               seeds=seeds)
  return ours, ref, s


def _diff(a, b):
  return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_guidance_zero_is_the_conditional_prediction_alone(torch_sd, monkeypatch):
  """diffusers ignores the negative prompt at guidance <= 1; so do we, on an undoubled batch
  (before, guidance 0 returned the negative prompt's prediction: the doubled program below)."""
  import jax.numpy as jnp
  ours, ref, s = _run(torch_sd, "dpm++2m", 4, 0.0, monkeypatch, negative="blurry")
  print(f"guidance 0: max abs pixel diff {_diff(ours, ref)}/255")
  assert _diff(ours, ref) <= 2
  assert set(s.unet.batches) == {2}  # never the doubled CFG batch
  assert s(PROMPTS, "blurry", [1, 2], 1.0).shape == (2, 16, 16, 3)  # the compiled __call__ too
  assert set(s.unet.batches) == {2}
  latents = np.random.default_rng(4).standard_normal((2, 4, 8, 8)).astype(np.float32)  # _run's
  ids = s.tokenize(PROMPTS)
  negative = s.tokenize(["blurry"] * 2)
  old = jax.jit(s._sample, static_argnames=("guided",))(
      s.params, ids, negative, np.zeros(2, np.uint32), jnp.float32(0),
      jnp.asarray(latents.transpose(0, 2, 3, 1)),
      guided=True)
  print(f"negative prompt's images differ by {_diff(np.asarray(old), ours)}/255")
  assert set(s.unet.batches) == {2, 4} and _diff(np.asarray(old), ours) > 2


@pytest.mark.parametrize("kind,steps,guidance,overrides", [
    ("euler_a", 1, 0.0, {"timestep_spacing": "trailing"})])  # SD-Turbo's 1 step
def test_turbo_one_step_matches_diffusers(torch_sd, kind, steps, guidance, overrides,
                                          monkeypatch):
  test_few_step_pipeline_matches_diffusers(torch_sd, kind, steps, guidance, overrides,
                                           monkeypatch)


@pytest.mark.slow  # ~40-130 s each on 2 shared cores (two compiles + torch)
@pytest.mark.parametrize("kind,steps,guidance,overrides", [
    ("euler_a", 6, 5.0, {}),
    ("euler_a", 4, 0.0, {"timestep_spacing": "trailing"}),  # SD-Turbo's 4 steps
    ("lcm", 4, 1.5, {}),
    ("lcm", 2, 1.0, {}),
])
def test_few_step_pipeline_matches_diffusers(torch_sd, kind, steps, guidance, overrides,
                                             monkeypatch):
  ours, ref, s = _run(torch_sd, kind, steps, guidance, monkeypatch, overrides=overrides)
  assert set(s.unet.batches) == {4 if guidance > 1 else 2}
  diff = _diff(ours, ref)
  print(f"{kind} {steps} steps guidance {guidance} {overrides}: max abs pixel diff {diff}/255, "
        f"image std {ref.std():.1f}")
  assert ours.dtype == np.uint8 and ours.shape == ref.shape
  assert diff <= 2
  if steps > 1:  # the step noise matters: other seeds, other images
    other, _, _ = _run(torch_sd, kind, steps, guidance, monkeypatch, overrides=overrides,
                       seeds=(4, 10))
    assert _diff(other, ours) > 2


def test_step_noise_depends_on_seed_and_step_only():
  a = np.asarray(sampler_lib.step_noise(np.array([1, 2], np.uint32), 0, (2, 2, 4)))
  b = np.asarray(sampler_lib.step_noise(np.array([2], np.uint32), 0, (2, 2, 4)))
  c = np.asarray(sampler_lib.step_noise(np.array([2], np.uint32), 1, (2, 2, 4)))
  first = np.asarray(sampler_lib.initial_latents(np.array([2], np.uint32), (2, 2, 4)))
  np.testing.assert_array_equal(a[1:], b)
  assert not np.allclose(b, c) and not np.allclose(b, first)


@pytest.fixture(scope="module")
def torch_lcm(tmp_path_factory):
  """A tiny LCM-distilled SD: the UNet takes the guidance scale (time_cond_proj_dim) as input."""
  path = str(tmp_path_factory.mktemp("lcm_unet") / "sd")
  pt = helpers.make_torch_pipeline(path, seed=8, overrides={"unet": {"time_cond_proj_dim": 32}})
  import torch
  with torch.no_grad():  # diffusers inits cond_proj like any Linear; make its effect visible
    pt.unet.time_embedding.cond_proj.weight.mul_(20.0)
  pt.save_pretrained(path)
  return path, pt


@pytest.mark.slow  # ~30 s: two compiles + diffusers
def test_lcm_distilled_unet_takes_the_guidance_as_input_like_diffusers(torch_lcm, monkeypatch):
  """LCM-Dreamshaper-style UNets: guidance w enters as get_guidance_scale_embedding(w - 1) added
  to the time embedding, with no CFG batch; images match diffusers and move with w."""
  ours, ref, s = _run(torch_lcm, "lcm", 4, 8.0, monkeypatch)
  diff = _diff(ours, ref)
  print(f"LCM-distilled UNet, 4 steps, w=8: max abs pixel diff {diff}/255, image std {ref.std():.1f}")
  assert set(s.unet.batches) == {2}  # never the doubled CFG batch
  assert diff <= 2
  other, ref_other, _ = _run(torch_lcm, "lcm", 4, 2.0, monkeypatch)
  assert _diff(other, ref_other) <= 2 and _diff(other, ours) > 2  # w is an input that matters
