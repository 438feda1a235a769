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


def _random_grads(pt_pipe, step):
  rng = np.random.default_rng(100 + step)
  return {k: (rng.standard_normal(p.shape) * 0.1).astype(np.float32)
          for k, p in pt_pipe.unet.named_parameters()}


def _our_steps(trainer, pt_pipe, steps):
  """`steps` of Trainer.apply_update (clip + AdamW + EMA) with the given torch-layout gradients."""
  from synth_jax.diffusion import torch_layout  # noqa: F401  (params_from_diffusers below)
  state = trainer.init_state()
  update = jax.jit(trainer.apply_update)
  cfg = trainer.pipe.configs["unet"]
  for s in range(steps):
    grad = unet_lib.params_from_diffusers(_random_grads(pt_pipe, s), cfg)
    state = update(state, {"unet": jax.tree.map(jnp.asarray, grad)})
  return jax.device_get(state)


def _rel(ours, ref):
  num = np.sqrt(sum(np.sum((ours[k] - ref[k]) ** 2) for k in ref))
  return num / np.sqrt(sum(np.sum(ref[k] ** 2) for k in ref)), max(
      float(np.abs(ours[k] - ref[k]).max()) for k in ref)


def test_five_adamw_steps_and_ema_match_torch_adamw_and_diffusers_emamodel(pt):
  """5 updates with warmup, clipping (the random grads' norm is > max_grad_norm, so clipping
  acts), weight decay: weights vs torch.optim.AdamW + clip_grad_norm_ + LambdaLR, EMA vs
  diffusers.training_utils.EMAModel (decay 0.9 so the EMA differs from the weights)."""
  import copy
  import torch
  from diffusers.training_utils import EMAModel
  root, pt_pipe = pt
  trainer, cfg = _trainer(root, "epsilon", "learning_rate=1e-3", "warmup_steps=3",
                          "weight_decay=0.1", "max_grad_norm=1.0", "ema_decay=0.9")
  state = _our_steps(trainer, pt_pipe, 5)
  unet = copy.deepcopy(pt_pipe.unet)
  opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                          weight_decay=0.1)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: min(1.0, n / 3))  # constant_with_warmup
  ema = EMAModel(unet.parameters(), decay=0.9)
  norms = []
  for s in range(5):
    grads = _random_grads(pt_pipe, s)
    for k, p in unet.named_parameters():
      p.grad = torch.from_numpy(grads[k])
    norms.append(float(torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)))
    opt.step()
    sched.step()
    opt.zero_grad()
    ema.step(unet.parameters())
  ref = {k: p.detach().numpy() for k, p in unet.named_parameters()}
  ours = unet_lib.params_to_diffusers(state["params"]["unet"])
  rel, worst = _rel(ours, ref)
  moved = max(float(np.abs(ref[k] - p.detach().numpy()).max())
              for k, p in pt_pipe.unet.named_parameters())
  ema_unet = copy.deepcopy(unet)
  ema.copy_to(ema_unet.parameters())
  ema_ref = {k: p.detach().numpy() for k, p in ema_unet.named_parameters()}
  ema_rel, ema_worst = _rel(unet_lib.params_to_diffusers(state["ema"]["unet"]), ema_ref)
  print(f"AdamW 5 steps: rel L2 {rel:.1e}, max abs {worst:.1e} (weights moved {moved:.1e}); "
        f"EMA rel L2 {ema_rel:.1e}, max abs {ema_worst:.1e}; grad norms {norms[0]:.1f}")
  assert min(norms) > 1.0  # clipping was exercised
  assert moved > 1e-3      # the step really updated the weights
  assert worst <= 1e-5 and ema_worst <= 1e-5
  assert int(state["step"]) == 5
  assert ema.optimization_step == 5
  assert max(float(np.abs(ema_ref[k] - ref[k]).max()) for k in ref) > 1e-4  # EMA != weights
