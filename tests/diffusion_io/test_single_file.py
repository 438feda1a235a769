"""Single-file (original LDM layout) checkpoints through diffusers' from_single_file, offline.

The checkpoint is the tiny diffusers pipeline written in the original CompVis key layout
(tests/diffusion_io/ldm_layout.py); `single_file_config` points diffusers at the pipeline's own
folder for the component configs, tokenizer and scheduler, so nothing comes from the hub.
"""
import os

import jax
import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax import sharding
from synth_jax.diffusion import loading
from synth_jax.diffusion import sampler as sampler_lib
from synth_jax.errors import WeightsError
from synth_jax.models import weights
from tests.diffusion_io import helpers
from tests.diffusion_io import ldm_layout

GENERATE_BASE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "generate", "base.py")


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
  root = tmp_path_factory.mktemp("single")
  folder = str(root / "sd")
  pt = helpers.make_torch_pipeline(folder, seed=2)
  ckpt = str(root / "sd_single.safetensors")
  weights.write_safetensors(ckpt, ldm_layout.pipeline_to_ldm(pt))
  return folder, ckpt


def _assert_same_params(a, b):
  for name in ("unet", "vae", "text_encoder"):
    x, y = weights.flatten(a.params[name]), weights.flatten(b.params[name])
    assert set(x) == set(y), name
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}/{k}")


def test_single_file_equals_folder(single_file, tmp_path):
  folder, ckpt = single_file
  keys = weights.read_tensors(ckpt)
  assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in keys  # really the LDM layout
  assert not any(k.startswith("unet.") or ".down_blocks." in k for k in keys)
  ours = loading.load_single_file(ckpt, config=folder, workdir=str(tmp_path))
  ref = loading.load_pipeline(folder)
  _assert_same_params(ours, ref)  # every tensor back bitwise: both conversions are exact
  assert ours.scheduler_config["_class_name"] == ref.scheduler_config["_class_name"]
  text = "a photo of the cat"
  assert ours.tokenizer(text).input_ids == ref.tokenizer(text).input_ids


def test_sampler_from_config_takes_a_single_file(single_file):
  folder, ckpt = single_file
  config = config_lib.load_config(GENERATE_BASE, [  # the config file's defaults
      f"model_path={ckpt}", f"single_file_config={folder}", "dtype=float32", "batch_size=1",
      "steps=2", "resolution=16", "mesh.data=1"])
  s = sampler_lib.Sampler.from_config(config, sharding.make_mesh({"data": 1},
                                                                  devices=jax.devices()[:1]))
  _assert_same_params(s.pipe, loading.load_pipeline(folder))


def test_single_file_without_config_offline_is_one_line(single_file):
  """No config: diffusers guesses SD-1.5 and wants its configs from the hub (offline here)."""
  assert os.environ.get("HF_HUB_OFFLINE") == "1"
  with pytest.raises(WeightsError, match="diffusers could not convert .*single_file_config") as e:
    loading.load_single_file(single_file[1])
  print(e.value)
  assert "\n" not in str(e.value)
