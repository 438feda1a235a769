"""A tiny PyTorch diffusers StableDiffusionXLPipeline (the reference), shaped like the real one."""
import os

import numpy as np

from synth_jax.diffusion import tiny


def make_torch_sdxl(path: str, seed: int = 0, unet_overrides: dict | None = None):
  """SDXL's shape at tiny widths: a first block without attention, transformer depth per block,
  linear projections, text_time added conditioning, a CLIP-L-style encoder (quick_gelu) and a
  bigG-style encoder with projection (gelu), two tokenizers (the second pads with '!'), an
  upcast VAE and the Euler scheduler. Saved with save_pretrained at `path`."""
  import diffusers
  import torch
  import transformers
  torch.manual_seed(seed)
  tok_dir = os.fspath(path).rstrip("/") + "_tok"
  tiny.write_tiny_tokenizer(tok_dir)
  tokenizer = transformers.CLIPTokenizer.from_pretrained(tok_dir)
  tokenizer_2 = transformers.CLIPTokenizer.from_pretrained(tok_dir, pad_token="!")
  eos = tokenizer.eos_token_id
  unet = diffusers.UNet2DConditionModel(**dict(dict(
      sample_size=8, block_out_channels=(16, 32, 32), layers_per_block=2,
      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
      attention_head_dim=(2, 2, 4), transformer_layers_per_block=(1, 1, 2),
      use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
      projection_class_embeddings_input_dim=16 + 6 * 8, cross_attention_dim=32 + 24,
      norm_num_groups=8), **(unet_overrides or {})))
  vae = diffusers.AutoencoderKL(
      block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
      norm_num_groups=8, sample_size=16, scaling_factor=0.13025, force_upcast=True)
  common = dict(bos_token_id=eos - 1, eos_token_id=eos, pad_token_id=eos, vocab_size=len(tokenizer),
                layer_norm_eps=1e-5, num_attention_heads=4, max_position_embeddings=77)
  te1 = transformers.CLIPTextModel(transformers.CLIPTextConfig(
      hidden_size=32, intermediate_size=37, num_hidden_layers=3, hidden_act="quick_gelu",
      **common)).eval()
  te2 = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
      hidden_size=24, intermediate_size=40, num_hidden_layers=3, hidden_act="gelu",
      projection_dim=16, **common)).eval()
  with torch.no_grad():  # LayerNorm init is (1, 0): perturb so parity sees scale and bias
    for model in (te1, te2, unet, vae):
      for name, p in model.named_parameters():
        if "norm" in name:
          p.add_(0.1 * torch.randn_like(p))
  scheduler = diffusers.EulerDiscreteScheduler(
      beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
      timestep_spacing="leading")
  pipe = diffusers.StableDiffusionXLPipeline(
      vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
      unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)
  pipe.save_pretrained(path)
  return pipe


def max_abs(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())
