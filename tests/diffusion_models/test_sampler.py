"""The jitted sampler vs PyTorch diffusers' StableDiffusionPipeline; recompiles; sharding."""
import jax
import numpy as np
import pytest

from synth_jax import sharding
from synth_jax.diffusion import loading
from synth_jax.diffusion import sampler as sampler_lib
from tests.diffusion_io import helpers

PROMPTS = ["a photo of the cat", "a blurry sketch of a dog"]
SCHEDULERS = {"dpm++2m": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler",
              "euler": "EulerDiscreteScheduler"}


@pytest.fixture(scope="module")
def torch_sd(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sampler") / "sd")
  return path, helpers.make_torch_pipeline(path, seed=4)


def _mesh(n):
  return sharding.make_mesh({"data": n}, devices=jax.devices()[:n])


@pytest.mark.parametrize("kind", list(SCHEDULERS))
def test_pipeline_matches_diffusers(torch_sd, kind):
  import diffusers
  import torch
  path, pt = torch_sd
  pt.scheduler = getattr(diffusers, SCHEDULERS[kind]).from_config(pt.scheduler.config)
  latents = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
  ref = pt(PROMPTS, num_inference_steps=6, guidance_scale=5.0, height=16, width=16,
           latents=torch.from_numpy(latents), output_type="np").images
  ref = (ref * 255).round().astype(np.uint8)
  s = sampler_lib.Sampler(loading.load_pipeline(path), _mesh(1), batch_size=2, num_steps=6,
                          scheduler=kind)
  ours = s.sample_from_latents(PROMPTS, "", latents.transpose(0, 2, 3, 1), 5.0)
  diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
  print(f"{kind}: max abs pixel diff {diff}/255")
  assert ours.dtype == np.uint8 and ours.shape == ref.shape
  assert diff <= 2


@pytest.fixture(scope="module")
def torch_sd2(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sampler") / "sd2")
  return path, helpers.make_torch_pipeline(path, seed=5, overrides=helpers.SD2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SCHEDULERS))
def test_sd2_pipeline_matches_diffusers(torch_sd2, kind):
  """SD 2.x shape (v-prediction, linear proj, head counts [2, 4], upcast_attention, gelu text
  encoder) vs StableDiffusionPipeline fp32: measured max abs pixel diff 1/255 (dpm++2m), 0 (ddim,
  euler). The bound bites: reading v as epsilon moves pixels by up to 105/255, dropping the
  negative prompt by 15/255. A gelu -> quick_gelu swap moves only 1/255 here, so text-encoder
  activations are checked by tests/diffusion_io/test_clip_text.py (<= 1e-4)."""
  import diffusers
  import torch
  path, pt = torch_sd2
  pt.scheduler = getattr(diffusers, SCHEDULERS[kind]).from_config(pt.scheduler.config)
  assert pt.unet.config.use_linear_projection and pt.unet.config.upcast_attention
  assert pt.scheduler.config.prediction_type == "v_prediction"
  assert pt.text_encoder.config.hidden_act == "gelu"
  latents = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
  ref = pt(PROMPTS, negative_prompt=["blurry", ""], num_inference_steps=6, guidance_scale=5.0,
           height=16, width=16, latents=torch.from_numpy(latents), output_type="np").images
  ref = (ref * 255).round().astype(np.uint8)
  pipe = loading.load_pipeline(path)
  assert pipe.prediction_type == "v_prediction"
  s = sampler_lib.Sampler(pipe, _mesh(1), batch_size=2, num_steps=6, scheduler=kind)
  ours = s.sample_from_latents(PROMPTS, ["blurry", ""], latents.transpose(0, 2, 3, 1), 5.0)
  diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
  print(f"sd2 {kind}: max abs pixel diff {diff}/255, image std {ref.std():.1f}")
  assert ours.dtype == np.uint8 and ours.shape == ref.shape
  assert diff <= 2


def test_new_prompts_seeds_guidance_do_not_recompile(torch_sd):
  s = sampler_lib.Sampler(loading.load_pipeline(torch_sd[0]), _mesh(2), batch_size=2, num_steps=3)
  a = s(PROMPTS, "", [1, 2], 7.5)
  b = s(["a photo of the bird", "a car"], "blurry", [3, 4], 2.0)
  c = s(PROMPTS, "", [1, 2], 7.5)
  assert s.compiles == 1
  np.testing.assert_array_equal(a, c)
  assert not np.array_equal(a, b)


def test_sharded_equals_single_device_and_batch_position(torch_sd, monkeypatch):
  """8 devices vs 1, on the decoded floats in [-1, 1] (before uint8).

  The same per-device program gives the same bits: image 3 sampled alone on one device equals
  image 3 of a batch of 8 on 8 devices, so sharding adds nothing and an image depends on its own
  (prompt, seed) only. 8 x 1 vs 1 x 8 is not bitwise on CPU: XLA:CPU emits other reduction code
  for GroupNorm/LayerNorm when the per-device batch is 1 (a lone GroupNorm differs by 9.5e-7), so
  the floats differ by ~1e-6 (measured max abs 1.6e-6, uint8 0; a pixel at a rounding
  boundary may still flip by 1).
  """
  to_uint8 = sampler_lib.to_uint8
  monkeypatch.setattr(sampler_lib, "to_uint8", lambda x: x.astype(np.float32))
  pipe = loading.load_pipeline(torch_sd[0])
  prompts = [PROMPTS[i % 2] for i in range(8)]
  seeds = np.arange(8) + 10
  one = sampler_lib.Sampler(pipe, _mesh(1), batch_size=8, num_steps=3)(prompts, "", seeds, 4.0)
  eight = sampler_lib.Sampler(pipe, _mesh(8), batch_size=8, num_steps=3)(prompts, "", seeds, 4.0)
  alone = sampler_lib.Sampler(pipe, _mesh(1), batch_size=1, num_steps=3)(prompts[3:4], "",
                                                                          seeds[3:4], 4.0)
  assert one.dtype == np.float32 and one.shape == (8, 16, 16, 3)
  np.testing.assert_array_equal(alone, eight[3:4])
  diff = helpers.max_abs(one, eight)
  u8 = int(np.abs(np.asarray(to_uint8(one), int) - np.asarray(to_uint8(eight), int)).max())
  print(f"1 vs 8 devices: decoded float max abs diff {diff:.1e}, uint8 {u8}/255")
  assert diff <= 1e-5 and u8 <= 1
  assert helpers.max_abs(one[2], one[3]) > 0.1  # different prompts and seeds: different images


@pytest.mark.slow
def test_bf16_pipeline_samples_close_to_fp32(torch_sd):
  """bf16 params and compute: measured mean abs diff 0.43/255 (max 3/255) from the fp32 images."""
  import jax.numpy as jnp
  import ml_dtypes
  pipe = loading.load_pipeline(torch_sd[0], dtype=jnp.bfloat16)
  for name in ("unet", "vae", "text_encoder"):
    dtypes = {np.asarray(x).dtype for x in jax.tree_util.tree_leaves(pipe.params[name])}
    assert dtypes == {np.dtype(ml_dtypes.bfloat16)}, (name, dtypes)
  seeds = [5, 6]
  s16 = sampler_lib.Sampler(pipe, _mesh(1), batch_size=2, num_steps=6)
  assert s16.unet.dtype == jnp.bfloat16 and s16.vae.dtype == jnp.bfloat16
  b16 = s16(PROMPTS, "", seeds, 5.0)
  f32 = sampler_lib.Sampler(loading.load_pipeline(torch_sd[0]), _mesh(1), batch_size=2,
                            num_steps=6)(PROMPTS, "", seeds, 5.0)
  diff = np.abs(b16.astype(int) - f32.astype(int))
  print(f"bf16 vs fp32 sampler: mean abs {diff.mean():.2f}/255, max {diff.max()}/255, "
        f"image std {f32.std():.1f}")
  assert b16.dtype == np.uint8 and b16.shape == f32.shape
  assert b16.std() > 10  # a NaN anywhere would come out as flat 0 images
  assert 0 < diff.max() and diff.mean() <= 1.0  # really bf16 (not bitwise fp32), yet close
