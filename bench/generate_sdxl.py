"""SDXL shapes for bench/generate.py: the real widths (`sdxl`) and a tiny stand-in (`sdxl-tiny`).

`sdxl` is stabilityai/stable-diffusion-xl-base-1.0's configs (UNet 2.6B parameters: transformer
depth 1/2/10, head dims 5/10/20 x 64, text_time conditioning; CLIP ViT-L + OpenCLIP bigG with
projection; the upcast VAE; the Euler scheduler), randomly initialised: speed does not depend on
the values. `sdxl-tiny` has the same structure at tiny widths, for a CPU smoke run.
"""
from __future__ import annotations

_EULER = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000,
          "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
          "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
          "interpolation_type": "linear", "use_karras_sigmas": False}
_CLIP = {"max_position_embeddings": 77, "layer_norm_eps": 1e-5, "bos_token_id": 49406,
         "eos_token_id": 49407, "pad_token_id": 1}

SDXL = {
    "unet": {"sample_size": 128, "in_channels": 4, "out_channels": 4,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             "block_out_channels": [320, 640, 1280], "layers_per_block": 2,
             "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20],
             "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
             "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32},
    "vae": {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "sample_size": 1024,
            "scaling_factor": 0.13025, "force_upcast": True},
    "text_encoder": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
                     "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu",
                     "projection_dim": 768, **_CLIP},
    "text_encoder_2": {"vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120,
                       "num_hidden_layers": 32, "num_attention_heads": 20, "hidden_act": "gelu",
                       "projection_dim": 1280, "architectures": ["CLIPTextModelWithProjection"],
                       **_CLIP},
    "scheduler": _EULER,
}


def tiny(vocab_size: int, eos_token_id: int) -> dict:
  """SDXL's structure at tiny widths (tests/diffusion_models/sdxl_helpers.py's shapes)."""
  clip = dict(_CLIP, vocab_size=vocab_size, eos_token_id=eos_token_id, bos_token_id=eos_token_id - 1,
              pad_token_id=eos_token_id, num_attention_heads=4)
  return {
      "unet": dict(SDXL["unet"], sample_size=8, block_out_channels=[16, 32, 32],
                   attention_head_dim=[2, 2, 4], transformer_layers_per_block=[1, 1, 2],
                   addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8,
                   cross_attention_dim=32 + 24, norm_num_groups=8),
      "vae": dict(SDXL["vae"], block_out_channels=[16, 32], norm_num_groups=8, sample_size=16,
                  down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2),
      "text_encoder": dict(clip, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                           hidden_act="quick_gelu", projection_dim=32),
      "text_encoder_2": dict(clip, hidden_size=24, intermediate_size=40, num_hidden_layers=3,
                             hidden_act="gelu", projection_dim=16,
                             architectures=["CLIPTextModelWithProjection"]),
      "scheduler": _EULER,
  }


def torch_pipeline(cfg: dict, tokenizer, scheduler):
  """diffusers' StableDiffusionXLPipeline with random weights at `cfg`'s shapes."""
  import diffusers
  import transformers
  strip = lambda c: {k: v for k, v in c.items()  # noqa: E731
                     if not k.startswith("_") and k != "architectures"}
  return diffusers.StableDiffusionXLPipeline(
      unet=diffusers.UNet2DConditionModel(**strip(cfg["unet"])),
      vae=diffusers.AutoencoderKL(**strip(cfg["vae"])),
      text_encoder=transformers.CLIPTextModel(transformers.CLIPTextConfig(
          **strip(cfg["text_encoder"]))),
      text_encoder_2=transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
          **strip(cfg["text_encoder_2"]))),
      tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler,
      force_zeros_for_empty_prompt=True)
