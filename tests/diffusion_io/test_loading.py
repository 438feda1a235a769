"""load_pipeline / save_pipeline vs PyTorch diffusers folders; strict errors; the tiny pipeline."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from synth_jax.diffusion import loading
from synth_jax.diffusion import tiny
from synth_jax.errors import WeightsError
from synth_jax.models import weights
from tests.diffusion_io import helpers

PROMPTS = ["a photo of the cat", "a blurry sketch of a dog, low quality!"]


@pytest.fixture(scope="module")
def torch_sd(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("load") / "sd")
  return path, helpers.make_torch_pipeline(path)


def _our_text_features(pipe, prompts):
  ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.max_length,
                       truncation=True, return_tensors="np").input_ids
  out = pipe.text_encoder.apply({"params": pipe.params["text_encoder"]}, ids)
  return ids, np.asarray(out["last_hidden_state"])


def _assert_same_weights(pipe, pt):
  """Every tensor we hold converts back to exactly the PyTorch pipeline's tensor."""
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.diffusion import vae as vae_lib
  from synth_jax.models import clip_text
  ours = {
      "unet": unet_lib.params_to_diffusers(pipe.params["unet"], pipe.configs["unet"]),
      "vae": vae_lib.params_to_diffusers(pipe.params["vae"], pipe.configs["vae"]),
      "text_encoder": {k.removeprefix("text_model."): v for k, v in
                       clip_text.params_to_hf(pipe.params["text_encoder"]).items()}}
  for name, mine in ours.items():
    ref = {k: v.detach().numpy() for k, v in getattr(pt, name).state_dict().items()
           if not k.endswith("position_ids")}
    ref = {k.removeprefix("text_model."): v for k, v in ref.items()}
    assert set(mine) == set(ref), name
    for k in ref:
      np.testing.assert_array_equal(mine[k], ref[k], err_msg=f"{name}.{k}")


def test_load_matches_diffusers(torch_sd):
  path, pt = torch_sd
  pipe = loading.load_pipeline(path)
  ids, ours = _our_text_features(pipe, PROMPTS)
  ref_ids, ref = helpers.torch_text_features(pt, PROMPTS)
  np.testing.assert_array_equal(ids, ref_ids)
  diff = helpers.max_abs(ours, ref)
  print(f"text encoder through load_pipeline: max abs diff {diff:.2e}")
  assert diff <= 1e-4
  assert pipe.scheduler_config["_class_name"] == "DPMSolverMultistepScheduler"
  assert pipe.prediction_type == "epsilon" and pipe.vae_scale_factor == 2
  assert pipe.sample_size == 16 and pipe.max_length == 77
  _assert_same_weights(pipe, pt)


def test_save_loads_in_diffusers(torch_sd, tmp_path):
  import diffusers
  path, pt = torch_sd
  out = str(tmp_path / "saved")
  loading.save_pipeline(loading.load_pipeline(path), out)
  loading.save_pipeline(loading.load_pipeline(out), out)  # overwriting swaps the folder whole
  assert not [n for n in os.listdir(tmp_path) if n.endswith((".tmp", ".old"))]
  again = diffusers.StableDiffusionPipeline.from_pretrained(out)
  assert type(again.scheduler) is type(pt.scheduler)
  public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
  assert public(again.scheduler.config) == public(pt.scheduler.config)
  _assert_same_weights(loading.load_pipeline(out), again)
  _assert_same_weights(loading.load_pipeline(out), pt)


def test_bf16_params(torch_sd):
  import jax.numpy as jnp
  import ml_dtypes
  path, pt = torch_sd
  pipe = loading.load_pipeline(path, dtype=jnp.bfloat16)
  leaves = weights.flatten(pipe.params["unet"]).values()
  assert all(np.asarray(x).dtype == ml_dtypes.bfloat16 for x in leaves)
  _, ours = _our_text_features(pipe, PROMPTS)
  assert helpers.max_abs(ours, helpers.torch_text_features(pt, PROMPTS)[1]) < 0.1


def _copy(path, tmp_path):
  dst = str(tmp_path / "copy")
  shutil.copytree(path, dst)
  return dst


@pytest.mark.parametrize("component,tensor,flax_name", [
    ("text_encoder", "text_model.encoder.layers.0.mlp.fc1.weight", "mlp/fc1/kernel"),
    ("unet", "conv_in.weight", "conv_in"),
])
def test_misshaped_tensor_is_named(torch_sd, tmp_path, component, tensor, flax_name):
  path = _copy(torch_sd[0], tmp_path)
  stem = "model" if component == "text_encoder" else "diffusion_pytorch_model"
  file = os.path.join(path, component, stem + ".safetensors")
  state = weights.read_tensors(file)
  key = tensor if tensor in state else tensor.removeprefix("text_model.")
  state[key] = np.zeros((3,) + state[key].shape[1:], state[key].dtype)
  weights.write_safetensors(file, state, {"format": "pt"})
  with pytest.raises(WeightsError, match=flax_name) as e:
    loading.load_pipeline(path)
  assert "mis-shaped" in str(e.value) and file in str(e.value)


@pytest.mark.parametrize("remove,expected", [
    ("vae/config.json", "vae/config.json is missing"),
    ("unet/diffusion_pytorch_model.safetensors", "expected diffusion_pytorch_model.safetensors"),
    ("model_index.json", "model_index.json is missing"),
    ("scheduler/scheduler_config.json", "scheduler_config.json is missing"),
])
def test_missing_file_names_path(torch_sd, tmp_path, remove, expected):
  path = _copy(torch_sd[0], tmp_path)
  os.remove(os.path.join(path, remove))
  with pytest.raises(WeightsError, match=expected):
    loading.load_pipeline(path)


class _Evil:  # pickles as a reference to this class: weights_only loading must refuse it
  pass


def test_bin_weights_only(torch_sd, tmp_path):
  import torch
  path, pt = torch_sd
  path = _copy(path, tmp_path)
  os.remove(os.path.join(path, "text_encoder", "model.safetensors"))
  bin_path = os.path.join(path, "text_encoder", "pytorch_model.bin")
  torch.save(pt.text_encoder.state_dict(), bin_path)  # plain state_dict: fine
  pipe = loading.load_pipeline(path)
  assert helpers.max_abs(_our_text_features(pipe, PROMPTS)[1],
                         helpers.torch_text_features(pt, PROMPTS)[1]) <= 1e-4
  torch.save({**pt.text_encoder.state_dict(), "extra": _Evil()}, bin_path)
  with pytest.raises(WeightsError, match="refusing to load .*pytorch_model.bin"):
    loading.load_pipeline(path)


def test_unet_vae_bin_equal_safetensors(torch_sd, tmp_path):
  """diffusers' save_pretrained(safe_serialization=False) .bin UNet/VAE: the same params bitwise."""
  import jax
  path, pt = torch_sd
  path = _copy(path, tmp_path)
  for name in ("unet", "vae"):
    os.remove(os.path.join(path, name, "diffusion_pytorch_model.safetensors"))
    getattr(pt, name).save_pretrained(os.path.join(path, name), safe_serialization=False)
    assert os.path.isfile(os.path.join(path, name, "diffusion_pytorch_model.bin"))
  from_bin, from_st = loading.load_pipeline(path), loading.load_pipeline(torch_sd[0])
  for name in ("unet", "vae"):
    a, b = weights.flatten(from_bin.params[name]), weights.flatten(from_st.params[name])
    assert set(a) == set(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}/{k}")
  z = np.random.default_rng(0).standard_normal((1, 8, 8, 4)).astype(np.float32)
  decode = jax.jit(lambda p, z: from_st.vae.apply(p, z, method=from_st.vae.decode))
  np.testing.assert_array_equal(np.asarray(decode({"params": from_bin.params["vae"]}, z)),
                                np.asarray(decode({"params": from_st.params["vae"]}, z)))


def test_not_a_folder(tmp_path):
  with pytest.raises(WeightsError, match="does not exist"):
    loading.load_pipeline(str(tmp_path / "nope"))


@pytest.mark.slow
def test_tiny_pipeline_loads_in_diffusers_and_ours(tmp_path):
  import diffusers
  import torch
  path = tiny.make_tiny_pipeline(str(tmp_path / "tiny"), seed=3)
  assert os.path.isfile(os.path.join(path, "tokenizer", "vocab.json"))
  pt = diffusers.StableDiffusionPipeline.from_pretrained(path)
  pipe = loading.load_pipeline(path)
  _assert_same_weights(pipe, pt)
  ids, ours = _our_text_features(pipe, PROMPTS)
  ref_ids, ref = helpers.torch_text_features(pt, PROMPTS)
  np.testing.assert_array_equal(ids, ref_ids)
  assert helpers.max_abs(ours, ref) <= 1e-4
  images = pt(PROMPTS[0], num_inference_steps=2, height=16, width=16, output_type="np",
              generator=torch.Generator().manual_seed(0)).images
  assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


@pytest.mark.slow
def test_tiny_pipeline_needs_no_torch(tmp_path):
  code = ("import sys; from synth_jax.diffusion import tiny, loading; "
          f"p = tiny.make_tiny_pipeline({str(tmp_path / 'tiny')!r}, sample_size=8); "
          "pipe = loading.load_pipeline(p); "
          "assert 'torch' not in sys.modules, 'torch was imported'; "
          "print(pipe.sample_size, len(pipe.tokenizer))")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split()[:1] == ["16"]
