"""finetune's objective, AdamW and EMA against diffusers' train_text_to_image.py in PyTorch.

The reference follows the script line for line on a tiny random PyTorch SD (same latents, noise,
timesteps and captions): DDPMScheduler.add_noise, epsilon or get_velocity target, F.mse_loss on
.float(), compute_snr min-SNR weights, clip_grad_norm_, torch.optim.AdamW, a LambdaLR warmup,
EMAModel.step.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax import sharding
from synth_jax.diffusion import finetune_step, loading
from synth_jax.diffusion import unet as unet_lib
from tests.diffusion_io import helpers
from tests.finetune import common


@pytest.fixture(scope="module")
def pt(tmp_path_factory):
  root = tmp_path_factory.mktemp("ftp")
  pipe = helpers.make_torch_pipeline(str(root / "sd"), seed=3)
  return root, pipe


def _inputs(pipe, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  latents = rng.standard_normal((batch, 8, 8, 4)).astype(np.float32)
  noise = rng.standard_normal((batch, 8, 8, 4)).astype(np.float32)
  t = np.array([17, 640, 999, 300][:batch])
  ids = pipe.tokenizer(["a photo of a cat", "a photo of a dog"][:batch], padding="max_length",
                       max_length=77, truncation=True, return_tensors="np").input_ids
  return latents, noise, t, ids.astype(np.int32)


def _trainer(root, prediction, *overrides):
  cfg = config_lib.load_config(f"{common.BASE}:model={root / 'sd'}",
                               ["workdir=/tmp/unused", "dtype=float32", "batch_size=8",
                                *overrides])
  pipe = loading.load_pipeline(cfg.model_path, dtype=jnp.float32)
  pipe.scheduler_config = {**pipe.scheduler_config, "prediction_type": prediction}
  return finetune_step.Trainer(cfg, pipe, sharding.make_mesh(cfg.mesh)), cfg


def _torch_loss(pt_pipe, prediction, latents, noise, t, ids, snr_gamma):
  """diffusers' train_text_to_image.py, the loss part, verbatim in substance."""
  import torch
  import torch.nn.functional as F
  from diffusers import DDPMScheduler
  from diffusers.training_utils import compute_snr
  noise_scheduler = DDPMScheduler.from_config(pt_pipe.scheduler.config)
  noise_scheduler.register_to_config(prediction_type=prediction)
  latents = torch.from_numpy(latents.transpose(0, 3, 1, 2))
  noise = torch.from_numpy(noise.transpose(0, 3, 1, 2))
  timesteps = torch.from_numpy(t).long()
  noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
  encoder_hidden_states = pt_pipe.text_encoder(torch.from_numpy(ids.astype(np.int64)),
                                               return_dict=False)[0]
  if noise_scheduler.config.prediction_type == "epsilon":
    target = noise
  else:
    target = noise_scheduler.get_velocity(latents, noise, timesteps)
  model_pred = pt_pipe.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
  if not snr_gamma:
    return F.mse_loss(model_pred.float(), target.float(), reduction="mean")
  snr = compute_snr(noise_scheduler, timesteps)
  mse_loss_weights = torch.stack([snr, snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
  if noise_scheduler.config.prediction_type == "epsilon":
    mse_loss_weights = mse_loss_weights / snr
  else:
    mse_loss_weights = mse_loss_weights / (snr + 1)
  loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
  loss = loss.mean(dim=list(range(1, len(loss.shape)))) * mse_loss_weights
  return loss.mean()


@pytest.mark.slow
@pytest.mark.parametrize("prediction,snr_gamma", [("epsilon", 0.0), ("v_prediction", 0.0),
                                                  ("epsilon", 5.0), ("v_prediction", 5.0)])
def test_loss_and_unet_grads_match_diffusers_training_script(pt, prediction, snr_gamma):
  root, pt_pipe = pt
  trainer, _ = _trainer(root, prediction, f"snr_gamma={snr_gamma}")
  latents, noise, t, ids = _inputs(trainer.pipe)
  params = {"unet": trainer.pipe.params["unet"]}
  loss, grad = jax.value_and_grad(trainer.loss)(params, trainer.frozen, ids, latents, noise, t)
  pt_pipe.unet.zero_grad()
  ref_loss = _torch_loss(pt_pipe, prediction, latents, noise, t, ids, snr_gamma)
  ref_loss.backward()
  ref = {k: p.grad.numpy() for k, p in pt_pipe.unet.named_parameters()}
  ours = unet_lib.params_to_diffusers(jax.device_get(grad["unet"]))
  assert ours.keys() == ref.keys()
  ref_loss = ref_loss.detach()
  loss_rel = abs(float(loss) - float(ref_loss)) / abs(float(ref_loss))
  num = np.sqrt(sum(np.sum((ours[k] - ref[k]) ** 2) for k in ref))
  den = np.sqrt(sum(np.sum(ref[k] ** 2) for k in ref))
  worst = max((np.abs(ours[k] - ref[k]).max() / max(np.abs(ref[k]).max(), 1e-12), k) for k in ref
              if np.abs(ref[k]).max() > 1e-3 * den / np.sqrt(len(ref)))
  print(f"{prediction} snr_gamma={snr_gamma}: loss {float(loss):.6f} vs {float(ref_loss):.6f} "
        f"(rel {loss_rel:.1e}); grad rel L2 {num / den:.1e}, worst tensor max-rel {worst[0]:.1e} "
        f"({worst[1]})")
  assert loss_rel <= 1e-4
  assert num / den <= 1e-4
  assert den > 1e-6  # not a comparison of zeros
