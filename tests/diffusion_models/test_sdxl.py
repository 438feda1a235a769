"""SDXL: our Flax UNet (text_time), both text encoders, VAE and the jitted sampler vs PyTorch
diffusers' StableDiffusionXLPipeline built at tiny widths."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import sharding
from synth_jax.diffusion import loading
from synth_jax.diffusion import sampler as sampler_lib
from synth_jax.errors import WeightsError
from tests.diffusion_models.sdxl_helpers import make_torch_sdxl, max_abs

PROMPTS = ["a photo of the cat", "a blurry sketch of a dog"]


@pytest.fixture(scope="module")
def torch_xl(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sdxl") / "xl")
  return path, make_torch_sdxl(path, seed=7)


def test_components_match_diffusers(torch_xl):
  import torch
  path, pt = torch_xl
  pipe = loading.load_pipeline(path)
  assert pipe.is_xl and pipe.force_zeros_for_empty_prompt
  ids = pt.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True,
                     return_tensors="pt").input_ids
  ids_2 = pt.tokenizer_2(PROMPTS, padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids
  assert (ids_2 != ids).any()  # the second tokenizer pads with '!'
  with torch.no_grad():
    r1 = pt.text_encoder(ids, output_hidden_states=True)
    r2 = pt.text_encoder_2(ids_2, output_hidden_states=True)
  o1 = pipe.text_encoder.apply({"params": pipe.params["text_encoder"]}, ids.numpy())
  o2 = pipe.text_encoder_2.apply({"params": pipe.params["text_encoder_2"]}, ids_2.numpy())
  diffs = {"te1 penultimate": max_abs(o1["hidden_states"][-2], r1.hidden_states[-2]),
           "te2 penultimate": max_abs(o2["hidden_states"][-2], r2.hidden_states[-2]),
           "te2 pooled projection": max_abs(o2["text_embeds"], r2.text_embeds)}
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  ctx = rng.standard_normal((2, 77, 56)).astype(np.float32)
  pooled = rng.standard_normal((2, 16)).astype(np.float32)
  time_ids = np.array([[16, 16, 0, 0, 16, 16], [1024, 768, 8, 4, 1024, 1024]], np.float32)
  with torch.no_grad():
    ref = pt.unet(torch.from_numpy(x), torch.tensor([999, 10]), torch.from_numpy(ctx),
                  added_cond_kwargs={"text_embeds": torch.from_numpy(pooled),
                                     "time_ids": torch.from_numpy(time_ids)}).sample.numpy()
    dec = pt.vae.decode(torch.from_numpy(x)).sample.numpy()
  out = jax.jit(pipe.unet.apply)({"params": pipe.params["unet"]}, x.transpose(0, 2, 3, 1),
                                 jnp.array([999, 10]), ctx, pooled, time_ids)
  diffs["unet"] = max_abs(out, ref.transpose(0, 2, 3, 1))
  ours_dec = jax.jit(lambda p, z: pipe.vae.apply(p, z, method=pipe.vae.decode))(
      {"params": pipe.params["vae"]}, x.transpose(0, 2, 3, 1))
  diffs["vae decode"] = max_abs(ours_dec, dec.transpose(0, 2, 3, 1))
  print({k: f"{v:.1e}" for k, v in diffs.items()})
  assert all(v <= 1e-4 for v in diffs.values()), diffs
  # the added conditioning is used: other time ids, other output
  other = pipe.unet.apply({"params": pipe.params["unet"]}, x.transpose(0, 2, 3, 1),
                          jnp.array([999, 10]), ctx, pooled, time_ids[::-1])
  assert max_abs(other, out) > 1e-3


def _images(torch_xl, kind, steps, guidance, monkeypatch, negative=None):
  import diffusers
  import torch
  path, pt = torch_xl
  classes = {"euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
             "lcm": "LCMScheduler"}
  modules = {"euler_a": "scheduling_euler_ancestral_discrete", "lcm": "scheduling_lcm"}
  pt.scheduler = getattr(diffusers, classes[kind]).from_config(pt.scheduler.config)
  seeds = np.array([5, 8], np.uint32)
  if kind in modules:  # the same per-step noise in both
    count = iter(range(steps))
    noise = lambda *a, **k: torch.from_numpy(np.asarray(sampler_lib.step_noise(  # noqa: E731
        seeds, next(count), (8, 8, 4))).transpose(0, 3, 1, 2).copy())
    monkeypatch.setattr(getattr(diffusers.schedulers, modules[kind]), "randn_tensor", noise)
  latents = np.random.default_rng(steps).standard_normal((2, 4, 8, 8)).astype(np.float32)
  ref = pt(PROMPTS, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
           height=16, width=16, latents=torch.from_numpy(latents), output_type="np").images
  ref = (ref * 255).round().astype(np.uint8)
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  s = sampler_lib.Sampler(loading.load_pipeline(path), mesh, batch_size=2, num_steps=steps,
                          scheduler=None if kind == "euler" else kind, height=16, width=16)
  assert s.sched.kind == kind  # None: the folder's own (Euler) scheduler
  ours = s.sample_from_latents(PROMPTS, negative or "", latents.transpose(0, 2, 3, 1), guidance,
                               seeds=seeds)
  return ours, ref


def _check(torch_xl, kind, steps, guidance, negative, monkeypatch):
  ours, ref = _images(torch_xl, kind, steps, guidance, monkeypatch, negative)
  diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
  print(f"sdxl {kind} {steps} steps guidance {guidance} negative {negative!r}: max abs pixel "
        f"diff {diff}/255, image std {ref.std():.1f}")
  assert ours.dtype == np.uint8 and ours.shape == ref.shape == (2, 16, 16, 3)
  assert diff <= 2


def test_sdxl_pipeline_matches_diffusers(torch_xl, monkeypatch):
  """Euler (the folder's scheduler); no negative prompt: zeros (force_zeros_for_empty_prompt)."""
  _check(torch_xl, "euler", 5, 5.0, None, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("kind,steps,guidance,negative", [
    ("euler", 4, 4.0, "blurry"), ("euler_a", 4, 5.0, None), ("lcm", 4, 1.0, None)])
def test_sdxl_pipeline_matches_diffusers_more(torch_xl, kind, steps, guidance, negative,
                                              monkeypatch):
  """A real negative prompt; Euler ancestral and LCM with the same step noise."""
  _check(torch_xl, kind, steps, guidance, negative, monkeypatch)


def test_sdxl_folder_without_second_text_encoder_is_one_line(torch_xl, tmp_path):
  broken = tmp_path / "xl"
  shutil.copytree(torch_xl[0], broken)
  shutil.rmtree(broken / "text_encoder_2")
  with pytest.raises(WeightsError) as e:
    loading.load_pipeline(str(broken))
  assert "SDXL pipeline without text_encoder_2/" in str(e.value)
  assert "\n" not in str(e.value) and os.fspath(broken) in str(e.value)
  # fp16: the VAE stays float32 (force_upcast), as StableDiffusionXLPipeline decodes
  fp16 = loading.load_pipeline(torch_xl[0], dtype=jnp.float16)
  leaves = jax.tree_util.tree_leaves
  assert fp16.vae.dtype == jnp.float32 and fp16.unet.dtype == jnp.float16
  assert {x.dtype for x in leaves(fp16.params["vae"])} == {np.dtype(np.float32)}
  assert {x.dtype for x in leaves(fp16.params["text_encoder_2"])} == {np.dtype(np.float16)}


def test_sdxl_textual_inversion_matches_diffusers(torch_xl, tmp_path):
  """diffusers' SDXL token file (clip_l / clip_g) loaded into both encoders, as diffusers does."""
  import diffusers
  import torch
  from synth_jax.diffusion import textual_inversion
  from synth_jax.models import weights
  path, _ = torch_xl
  rng = np.random.default_rng(3)
  embeds = {"clip_l": rng.standard_normal((2, 32)).astype(np.float32),
            "clip_g": rng.standard_normal((2, 24)).astype(np.float32)}
  file = str(tmp_path / "xl_token.safetensors")
  weights.write_safetensors(file, embeds, {"format": "pt"})
  ref = diffusers.StableDiffusionXLPipeline.from_pretrained(path)
  state = weights.read_tensors(file)
  ref.load_textual_inversion(torch.from_numpy(state["clip_l"]), token="<sty>",
                             text_encoder=ref.text_encoder, tokenizer=ref.tokenizer)
  ref.load_textual_inversion(torch.from_numpy(state["clip_g"]), token="<sty>",
                             text_encoder=ref.text_encoder_2, tokenizer=ref.tokenizer_2)
  prompts = ["a photo of <sty> cat", "a dog"]
  with torch.no_grad():
    want, _, want_pooled, _ = ref.encode_prompt(prompts, do_classifier_free_guidance=False)
  pipe = loading.load_pipeline(path)
  assert textual_inversion.load_textual_inversion(pipe, file, token="<sty>") == ["<sty>", "<sty>_1"]
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  s = sampler_lib.Sampler(pipe, mesh, batch_size=2, num_steps=1, height=16, width=16)
  context, added = s._encode(s.params, s.tokenize(prompts))
  d = max(max_abs(context, want.numpy()), max_abs(added["text_embeds"], want_pooled.numpy()))
  plain = loading.load_pipeline(path)
  s0 = sampler_lib.Sampler(plain, mesh, batch_size=2, num_steps=1, height=16, width=16)
  moved = max_abs(s0._encode(s0.params, s0.tokenize(["a photo of cat", "a dog"]))[0][0],
                  context[0])
  print(f"SDXL token: prompt embeds max abs diff {d:.1e}; the token moves them by {moved:.2f}")
  assert d <= 1e-4 and moved > 0.1
  with pytest.raises(WeightsError, match="does not name its token"):
    textual_inversion.load_textual_inversion(loading.load_pipeline(path), file)
