"""A tiny random Stable Diffusion, built and saved without torch.

For the demo (`synth-jax demo`) and for tests that must run without PyTorch: tiny UNet/VAE/CLIP
configs in the real diffusers/transformers schema, random init with our Flax modules, a tiny
byte-level CLIP BPE tokenizer, written with `save_pipeline` so PyTorch diffusers can load it too.
"""
from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import files, streams
from synth_jax.diffusion import loading
from synth_jax.models import clip_text
from synth_jax.models.clip_openclip import bytes_to_unicode

# Words that get whole-word BPE merges; anything else falls back to single bytes (still valid).
WORDS = ("a", "photo", "of", "the", "cat", "dog", "bird", "car", "plane", "ship", "flower",
         "painting", "sketch", "cartoon", "blurry", "low", "quality")
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def tiny_vocab(words=WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
  """CLIP-style vocab (bytes, bytes+</w>, merges, BOS, EOS) and left-to-right word merges."""
  alphabet = list(bytes_to_unicode().values())
  vocab = alphabet + [c + "</w>" for c in alphabet]
  merges: list[tuple[str, str]] = []
  for w in words:
    cur = w[0]
    for i, ch in enumerate(w[1:], 1):
      pair = (cur, ch + "</w>" if i == len(w) - 1 else ch)
      if pair not in merges:
        merges.append(pair)
      cur = pair[0] + pair[1]
  for a, b in merges:
    if a + b not in vocab:
      vocab.append(a + b)
  vocab += [BOS, EOS]
  return {t: i for i, t in enumerate(vocab)}, merges


def write_tiny_tokenizer(folder: str, max_length: int = 77, words=WORDS) -> int:
  """Writes vocab.json/merges.txt/tokenizer_config.json; returns the vocab size."""
  vocab, merges = tiny_vocab(words)
  files.write_text(os.path.join(folder, "vocab.json"), json.dumps(vocab, ensure_ascii=False))
  files.write_text(os.path.join(folder, "merges.txt"),
                "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
  files.write_json(os.path.join(folder, "tokenizer_config.json"), {
      "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": BOS,
      "eos_token": EOS, "unk_token": EOS, "pad_token": EOS, "do_lower_case": True})
  return len(vocab)


def tiny_configs(sample_size: int = 8, vocab_size: int = 525, eos_token_id: int = 524,
                 max_length: int = 77) -> dict:
  """diffusers/transformers config dicts of a tiny SD-1.x-shaped pipeline."""
  unet = {
      "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.30.0",
      "sample_size": sample_size, "in_channels": 4, "out_channels": 4,
      "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
      "mid_block_type": "UNetMidBlock2DCrossAttn", "block_out_channels": [32, 64],
      "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8,
      "norm_num_groups": 8, "norm_eps": 1e-5, "act_fn": "silu", "center_input_sample": False,
      "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1,
      "mid_block_scale_factor": 1, "only_cross_attention": False, "dual_cross_attention": False,
      "use_linear_projection": False, "upcast_attention": False, "transformer_layers_per_block": 1,
      "resnet_time_scale_shift": "default", "class_embed_type": None, "num_class_embeds": None,
      "time_embedding_type": "positional", "conv_in_kernel": 3, "conv_out_kernel": 3,
      "addition_embed_type": None, "encoder_hid_dim": None}
  vae = {
      "_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0",
      "in_channels": 3, "out_channels": 3,
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "block_out_channels": [32, 64],
      "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 8,
      "sample_size": sample_size * 2, "scaling_factor": 0.18215, "force_upcast": True,
      "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True}
  text_encoder = {
      "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "dtype": "float32",
      "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37,
      "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": max_length,
      "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 32,
      "attention_dropout": 0.0, "initializer_range": 0.02, "initializer_factor": 1.0,
      "bos_token_id": eos_token_id - 1, "eos_token_id": eos_token_id, "pad_token_id": eos_token_id}
  scheduler = {
      "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.30.0",
      "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
      "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "solver_order": 2,
      "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
      "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False,
      "clip_sample": False, "thresholding": False, "trained_betas": None}
  return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def init_component(module, kind: str, config: dict, seed: int) -> dict:
  """Random params of our UNet/VAE, on the host."""
  if hasattr(module, "init_params"):
    params = module.init_params(seed)
  else:
    key = jax.random.PRNGKey(seed)
    s = config["sample_size"]
    if kind == "unet":
      args = (jnp.zeros((1, s, s, config["in_channels"])), jnp.zeros((1,), jnp.int32),
              jnp.zeros((1, 77, config["cross_attention_dim"])))
    else:
      args = (jnp.zeros((1, s, s, config["in_channels"])),)
    params = jax.jit(module.init)(key, *args)["params"]
  return jax.tree_util.tree_map(np.asarray, params)


def make_tiny_pipeline(path: str, seed: int = 0, sample_size: int = 8,
                       max_length: int = 77) -> str:
  """Writes a tiny random SD (latents `sample_size`², images twice that) at `path`; returns it."""
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.diffusion import vae as vae_lib
  with tempfile.TemporaryDirectory() as tmp:
    vocab_size = write_tiny_tokenizer(tmp, max_length)
    tokenizer, tokenizer_files = loading.load_tokenizer(tmp)
  configs = tiny_configs(sample_size, vocab_size, tokenizer.eos_token_id, max_length)
  unet = unet_lib.UNet2DConditionModel.from_config(configs["unet"])
  vae = vae_lib.AutoencoderKL.from_config(configs["vae"])
  text_encoder = clip_text.CLIPTextModel.from_config(configs["text_encoder"])
  init_seed = lambda component: streams.int_seed(seed, "generator_init", component)  # noqa: E731
  params = {"unet": init_component(unet, "unet", configs["unet"], init_seed(0)),
            "vae": init_component(vae, "vae", configs["vae"], init_seed(1)),
            "text_encoder": text_encoder.init_params(init_seed(2))}
  model_index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}
  pipe = loading.StableDiffusion(
      unet=unet, vae=vae, text_encoder=text_encoder, params=params, tokenizer=tokenizer,
      scheduler_config=configs["scheduler"],
      configs={"model_index": model_index, "unet": configs["unet"], "vae": configs["vae"],
               "text_encoder": configs["text_encoder"]},
      tokenizer_files=tokenizer_files)
  loading.save_pipeline(pipe, path)
  return path
