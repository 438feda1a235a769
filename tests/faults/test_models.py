"""README rows for model folders: a misspelled/missing diffusers folder, a component without
weights, and weights with missing and mis-shaped tensors (a tiny diffusers StableDiffusionPipeline
saved with save_pretrained, then edited)."""
import os
import shutil

import pytest
from safetensors.numpy import load_file, save_file

from synth_jax.diffusion import loading
from synth_jax.errors import WeightsError


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
  from tests.diffusion_io import helpers
  path = str(tmp_path_factory.mktemp("models") / "sd-tiny")
  helpers.make_torch_pipeline(path)
  return path


def test_misspelled_model_folder(tmp_path):
  (tmp_path / "sd-tiny").mkdir()
  (tmp_path / "sd-tiny" / "model_index.json").write_text("{}")
  typo = str(tmp_path / "sd_tiny")
  with pytest.raises(WeightsError) as e:
    loading.load_pipeline(typo)
  msg = str(e.value)
  assert "\n" not in msg and f"pipeline folder {typo!r} does not exist" in msg
  assert "pass a diffusers folder" in msg


def test_model_folder_without_weights(tmp_path):
  """A folder copied without its .safetensors (e.g. a git clone without LFS)."""
  (tmp_path / "unet").mkdir()
  (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
  (tmp_path / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
  with pytest.raises(WeightsError) as e:
    loading.load_pipeline(str(tmp_path))
  msg = str(e.value)
  assert "\n" not in msg and f"no weights in {tmp_path / 'unet'}" in msg
  assert "diffusion_pytorch_model.safetensors" in msg and "save_pretrained" in msg


@pytest.mark.slow
def test_model_weights_with_missing_and_misshaped_tensors(sd, tmp_path):
  copy = str(tmp_path / "sd")
  shutil.copytree(sd, copy)
  path = os.path.join(copy, "unet", "diffusion_pytorch_model.safetensors")
  state = load_file(path)
  dropped = sorted(k for k in state if k.endswith("conv_in.bias"))[0]
  reshaped = sorted(k for k in state if k.endswith("conv_out.weight"))[0]
  shape = state[reshaped].shape
  del state[dropped]
  state[reshaped] = state[reshaped][:, :-1]  # one input channel short
  save_file(state, path)
  with pytest.raises(WeightsError) as e:
    loading.load_pipeline(copy)
  msg = str(e.value)
  assert "\n" not in msg and path in msg
  assert "missing" in msg and "conv_in" in msg
  assert "mis-shaped" in msg and "conv_out" in msg and str(shape[1] - 1) in msg
