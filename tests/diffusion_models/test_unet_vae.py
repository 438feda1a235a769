"""Flax UNet / VAE vs PyTorch diffusers on tiny random models: same weights, same outputs."""
import jax
import numpy as np
import pytest

from synth_jax.diffusion import tiny
from synth_jax.diffusion import unet as unet_lib
from synth_jax.diffusion import vae as vae_lib
from synth_jax.errors import WeightsError
from tests.diffusion_io import helpers

SD2_UNET = {"use_linear_projection": True, "attention_head_dim": [2, 4], "upcast_attention": True,
            "transformer_layers_per_block": [1, 2], "layers_per_block": 2}


def _torch_unet(overrides=None, seed=0):
  import diffusers
  import torch
  torch.manual_seed(seed)
  config = {k: v for k, v in tiny.tiny_configs()["unet"].items() if not k.startswith("_")}
  config.update(overrides or {})
  model = diffusers.UNet2DConditionModel(**config).eval()
  _perturb_norms(model)
  return model, config


def _perturb_norms(model):
  import torch
  with torch.no_grad():  # norms init to (1, 0); perturb so the test sees scale and bias
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))


def _state(model):
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("overrides", [None, SD2_UNET], ids=["sd1", "sd2"])
def test_unet_matches_diffusers(overrides):
  import torch
  model, config = _torch_unet(overrides)
  params = unet_lib.params_from_diffusers(_state(model), config)
  ours = unet_lib.UNet2DConditionModel.from_config(config)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  t = np.array([999, 17])
  ctx = rng.standard_normal((2, 7, 32)).astype(np.float32)
  with torch.no_grad():
    ref = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample.numpy()
  out = jax.jit(ours.apply)({"params": params}, x.transpose(0, 2, 3, 1), t, ctx)
  diff = helpers.max_abs(np.asarray(out).transpose(0, 3, 1, 2), ref)
  print(f"unet {'sd2' if overrides else 'sd1'} max abs diff {diff:.2e}")
  assert diff <= 1e-4
  back = unet_lib.params_to_diffusers(params, config)
  assert set(back) == set(_state(model))
  for k, v in _state(model).items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_vae_encode_decode_match_diffusers():
  import diffusers
  import torch
  torch.manual_seed(1)
  config = {k: v for k, v in tiny.tiny_configs()["vae"].items() if not k.startswith("_")}
  model = diffusers.AutoencoderKL(**config).eval()
  _perturb_norms(model)
  params = vae_lib.params_from_diffusers(_state(model), config)
  ours = vae_lib.AutoencoderKL.from_config(config)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
  with torch.no_grad():
    dist = model.encode(torch.from_numpy(x)).latent_dist
    mean, logvar = dist.mean.numpy(), dist.logvar.numpy()
    decoded = model.decode(dist.mean).sample.numpy()
  our_mean, our_logvar = jax.jit(lambda p, a: ours.apply(p, a, method=ours.encode))(
      {"params": params}, x.transpose(0, 2, 3, 1))
  our_dec = jax.jit(lambda p, z: ours.apply(p, z, method=ours.decode))(
      {"params": params}, np.asarray(our_mean))
  diffs = {"mean": helpers.max_abs(np.asarray(our_mean).transpose(0, 3, 1, 2), mean),
           "logvar": helpers.max_abs(np.asarray(our_logvar).transpose(0, 3, 1, 2), logvar),
           "decode": helpers.max_abs(np.asarray(our_dec).transpose(0, 3, 1, 2), decoded)}
  print("vae max abs diffs", diffs)
  assert max(diffs.values()) <= 1e-4


def test_legacy_vae_attention_names():
  import diffusers
  import torch
  torch.manual_seed(2)
  config = {k: v for k, v in tiny.tiny_configs()["vae"].items() if not k.startswith("_")}
  model = diffusers.AutoencoderKL(**config)
  state = _state(model)
  new = vae_lib.params_from_diffusers(state, config)
  legacy = {}
  for k, v in state.items():
    for ours, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                      ("to_out.0", "proj_attn")):
      if f".attentions.0.{ours}." in k:
        k, v = k.replace(f".{ours}.", f".{old}."), (v[:, :, None, None] if v.ndim == 2 else v)
    legacy[k] = v
  old = vae_lib.params_from_diffusers(legacy, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, new, old)


def test_unsupported_config_is_named():
  config = dict(tiny.tiny_configs()["unet"], class_embed_type="timestep")
  with pytest.raises(WeightsError, match="class_embed_type='timestep'"):
    unet_lib.UNet2DConditionModel.from_config(config)
  config = dict(tiny.tiny_configs()["unet"], down_block_types=["SimpleCrossAttnDownBlock2D"] * 2)
  with pytest.raises(WeightsError, match="SimpleCrossAttnDownBlock2D"):
    unet_lib.UNet2DConditionModel.from_config(config)
