"""`init=scratch`: the small random pipeline a from-scratch finetune starts from, VAE trained first.

`prepare(config, mesh, workdir)` builds `<workdir>/scratch_base`, a diffusers folder:
- a byte-level CLIP BPE tokenizer whose whole-word merges are the words of the run's captions
  (class names, templates or prompts.json), `config.scratch.max_length` tokens long;
- a CLIP text encoder, a UNet and an AutoencoderKL of the sizes in `config.scratch` (diffusers /
  transformers config keys), randomly initialised from stream "generator_init";
- the VAE trained on the run's images (the same selection the UNet phase uses): reconstruction
  MSE + `kl_weight` x KL(q(z|x) || N(0, I)), Adam, the batch of step s from (seed, s), a held-out
  share of the images (`vae_holdout`) never trained on; its PSNR (decoding the posterior mean,
  pixels in [0, 1]) goes to `<workdir>/vae_log.json`. The latents' `scaling_factor` is set to
  1 / std of the training latents (SD's 0.18215 was chosen the same way), so the UNet sees
  unit-variance latents.
The UNet (and text encoder, when `train_text_encoder`) are then trained by the ordinary finetune
loop on this folder. The folder is written atomically once the VAE is trained; a run killed
during the VAE phase retrains the VAE from the start on rerun (a few minutes at these sizes).
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import files, runs, sharding, streams
from synth_jax.diffusion import finetune_data, invert_data, loading, tiny
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)


def _words(prompts: list[list[str]]) -> tuple[str, ...]:
  """Lower-case words of every caption, in first-seen order (the tokenizer's whole-word merges)."""
  seen = dict.fromkeys(tiny.WORDS)
  for p in (x for row in prompts for x in row):
    for w in re.findall(r"[a-z]+", p.lower()):
      seen.setdefault(w, None)
  return tuple(seen)


def build(config, class_names: list[str]) -> loading.StableDiffusion:
  """The random small pipeline of `config.scratch` (host numpy params, float32)."""
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.diffusion import vae as vae_lib
  from synth_jax.models import clip_text
  sc = config.scratch
  max_length = int(sc.max_length)
  words = _words(finetune_data.class_prompts(config, class_names))
  with tempfile.TemporaryDirectory() as tmp:
    tiny.write_tiny_tokenizer(tmp, max_length, words=words)
    tokenizer, tokenizer_files = loading.load_tokenizer(tmp)
  latent = int(config.resolution) // 2 ** (len(sc.vae.block_out_channels) - 1)
  configs = tiny.tiny_configs(latent, len(tokenizer), tokenizer.eos_token_id, max_length)
  for name in ("unet", "vae", "text_encoder", "scheduler"):
    configs[name].update({k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in sc[name].to_dict().items()})
  configs["vae"]["sample_size"] = int(config.resolution)
  configs["vae"]["down_block_types"] = ["DownEncoderBlock2D"] * len(sc.vae.block_out_channels)
  configs["vae"]["up_block_types"] = ["UpDecoderBlock2D"] * len(sc.vae.block_out_channels)
  unet = unet_lib.UNet2DConditionModel.from_config(configs["unet"])
  vae = vae_lib.AutoencoderKL.from_config(configs["vae"])
  text_encoder = clip_text.CLIPTextModel.from_config(configs["text_encoder"])
  seed = lambda component: streams.int_seed(int(config.seed), "generator_init", component)  # noqa: E731
  params = {"unet": tiny.init_component(unet, "unet", configs["unet"], seed(0)),
            "vae": tiny.init_component(vae, "vae", configs["vae"], seed(1)),
            "text_encoder": text_encoder.init_params(seed(2))}
  model_index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}
  return loading.StableDiffusion(
      unet=unet, vae=vae, text_encoder=text_encoder, params=params, tokenizer=tokenizer,
      scheduler_config=configs["scheduler"],
      configs={"model_index": model_index, "unet": configs["unet"], "vae": configs["vae"],
               "text_encoder": configs["text_encoder"]},
      tokenizer_files=tokenizer_files)


def psnr(a, b) -> float:
  """PSNR in dB of images in [-1, 1], measured on [0, 1] pixels."""
  mse = float(np.mean(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) / 2) ** 2))
  return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def train_vae(config, pipe, images: np.ndarray, mesh) -> tuple[dict, dict]:
  """-> (trained VAE params, log) on images (N, r, r, 3) in [-1, 1]; a share held out."""
  import optax
  sc = config.scratch
  n = len(images)
  held = np.zeros(n, bool)
  k = int(round(n * float(sc.vae_holdout)))
  held[streams.rng(int(config.seed), "vae_holdout").permutation(n)[:k]] = True
  train, test = images[~held], images[held]
  vae = pipe.vae
  tx = optax.adam(float(sc.vae_learning_rate))
  kl_weight = float(sc.vae_kl_weight)

  def loss_fn(p, x, key):
    mean, logvar = vae.apply({"params": p}, x, method=vae.encode)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    rec = jnp.mean((vae.apply({"params": p}, z, method=vae.decode) - x) ** 2)
    kl = jnp.mean(0.5 * (mean ** 2 + jnp.exp(logvar) - 1.0 - logvar))
    return rec + kl_weight * kl, (rec, kl)

  @jax.jit
  def step(p, opt, x, key):
    (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, key)
    updates, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, updates), opt, aux

  rep = sharding.replicated(mesh)
  p = jax.device_put(jax.tree.map(lambda x: np.asarray(x, np.float32), pipe.params["vae"]), rep)
  opt = jax.device_put(tx.init(p), rep)
  steps, bs = int(sc.vae_steps), int(sc.vae_batch_size)
  bar = runs.progress(total=steps, desc="vae", unit="step")
  recs = []
  t0 = time.perf_counter()
  for s in range(steps):
    rng = streams.rng(int(config.seed), "vae_batch", s)
    x = train[rng.integers(0, len(train), bs)]
    if config.flip:
      x = np.where((rng.random(bs) < 0.5)[:, None, None, None], x[:, :, ::-1], x)
    x = sharding.shard_global_batch(x, mesh)
    p, opt, (rec, kl) = step(p, opt, x, streams.key(int(config.seed), "vae_batch", s))
    recs.append(float(rec))
    if not np.isfinite(recs[-1]):
      raise ConfigError(f"VAE loss is {recs[-1]} at step {s}; lower "
                        f"--config.scratch.vae_learning_rate (now {sc.vae_learning_rate})")
    bar.set_postfix(rec=f"{np.mean(recs[-20:]):.4f}")
    bar.update(1)
  bar.close()
  seconds = time.perf_counter() - t0
  p = jax.device_get(p)
  recon = jax.jit(lambda p, x: vae.apply({"params": p}, vae.apply(
      {"params": p}, x, method=vae.encode)[0], method=vae.decode))
  decode = lambda xs: np.concatenate([np.asarray(recon(p, xs[i:i + 64]))  # noqa: E731
                                      for i in range(0, len(xs), 64)]) if len(xs) else xs
  means = np.concatenate([np.asarray(vae.apply({"params": p}, train[i:i + 64],
                                               method=vae.encode)[0])
                          for i in range(0, len(train), 64)])
  record = {"steps": steps, "seconds": round(seconds, 1), "train_images": int(len(train)), "held_out_images": int(k),
            "psnr_train_db": psnr(decode(train[:256]), train[:256]),
            "psnr_held_out_db": psnr(decode(test), test) if k else None,
            "last_rec_losses": recs[-20:], "latent_std": float(means.std()),
            "scaling_factor": float(1.0 / means.std())}
  return jax.tree.map(lambda x: np.asarray(x, np.float32), p), record


def prepare(config, mesh, workdir: str) -> str:
  """`<workdir>/scratch_base`: the small pipeline with its VAE trained (built once)."""
  folder = os.path.join(workdir, "scratch_base")
  if os.path.exists(os.path.join(folder, "model_index.json")):
    return folder
  if "scratch" not in config:
    raise ConfigError("init=scratch needs the model sizes in config.scratch; start from "
                      "configs/finetune/digits_scratch.py")
  images, labels, names = invert_data.read_images(config)
  pipe = build(config, names)
  vae_params, record = train_vae(config, pipe, images, mesh)
  pipe.params["vae"] = vae_params
  pipe.configs["vae"]["scaling_factor"] = record["scaling_factor"]
  log.info("VAE: PSNR %.2f dB held out (%d images), %.2f dB train; scaling_factor %.4f",
           record["psnr_held_out_db"] or float("nan"), record["held_out_images"],
           record["psnr_train_db"], record["scaling_factor"])
  files.write_json(os.path.join(workdir, "vae_log.json"), record)
  loading.save_pipeline(pipe, folder)
  return folder
