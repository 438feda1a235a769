"""A tiny PyTorch diffusers StableDiffusionPipeline saved with save_pretrained (the reference)."""
import os

import numpy as np

from synth_jax.diffusion import tiny


# SD 2.x shape: linear proj_in/out, per-block head counts, fp32 attention scores, v-prediction,
# exact-gelu text encoder (OpenCLIP-H's). SD1 (the default) has conv proj, quick_gelu, epsilon.
SD2 = {"unet": {"use_linear_projection": True, "attention_head_dim": [2, 4],
                "upcast_attention": True},
       "text_encoder": {"hidden_act": "gelu"},
       "scheduler": {"prediction_type": "v_prediction"}}


def make_torch_pipeline(path: str, seed: int = 0, overrides: dict | None = None):
  """Builds a tiny SD with diffusers/transformers (torch), saves it at `path`, returns it.

  `overrides`: {component: {config key: value}} over tiny.tiny_configs, e.g. SD2.
  """
  import diffusers
  import torch
  import transformers
  torch.manual_seed(seed)
  tok_dir = os.fspath(path).rstrip("/") + "_tok"
  tiny.write_tiny_tokenizer(tok_dir)
  tokenizer = transformers.CLIPTokenizer.from_pretrained(tok_dir)
  configs = tiny.tiny_configs(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
  for component, values in (overrides or {}).items():
    configs[component].update(values)
  strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
  unet = diffusers.UNet2DConditionModel(**strip(configs["unet"]))
  vae = diffusers.AutoencoderKL(**strip(configs["vae"]))
  te_config = {k: v for k, v in configs["text_encoder"].items()
               if k not in ("architectures", "model_type", "dtype")}
  text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**te_config)).eval()
  with torch.no_grad():  # LayerNorm init is (1, 0): perturb so parity sees scale and bias
    for name, p in text_encoder.named_parameters():
      if "layer_norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  scheduler = diffusers.DPMSolverMultistepScheduler.from_config(strip(configs["scheduler"]))
  pipe = diffusers.StableDiffusionPipeline(
      unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
      safety_checker=None, feature_extractor=None, requires_safety_checker=False)
  pipe.save_pretrained(path)
  return pipe


def torch_text_features(pipe, prompts):
  """diffusers' prompt encoding: padded to max_length, last_hidden_state."""
  import torch
  ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                       truncation=True, return_tensors="pt").input_ids
  with torch.no_grad():
    out = pipe.text_encoder(ids)
  return ids.numpy(), out.last_hidden_state.numpy()


def max_abs(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())
