"""A diffusers SD1 pipeline -> one original (LDM/CompVis) checkpoint, for single-file tests.

diffusers ships only the other direction (`from_single_file`); its repo script
`convert_diffusers_to_original_stable_diffusion.py` is not installed and hard-codes SD-1.5's four
levels of two layers. This is the same mapping for any number of levels and layers per block.
Inside a UNet transformer block and the text encoder the names are the same in both layouts.
"""
import numpy as np

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
           "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, prefixes) -> tuple[str, str] | None:
  for ours, theirs in prefixes:
    if key.startswith(ours):
      return theirs, key[len(ours):]
  return None


def unet_to_ldm(state: dict, config: dict) -> dict:
  """diffusers UNet2DConditionModel state_dict -> LDM `model.diffusion_model.*` keys."""
  n, per = len(config["block_out_channels"]), config["layers_per_block"] + 1
  up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
  prefixes = [("time_embedding.linear_1.", "time_embed.0."),
              ("time_embedding.linear_2.", "time_embed.2."), ("conv_in.", "input_blocks.0.0."),
              ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
              ("mid_block.resnets.0.", "middle_block.0."),
              ("mid_block.attentions.0.", "middle_block.1."),
              ("mid_block.resnets.1.", "middle_block.2.")]
  for i in range(n):
    for j in range(per - 1):
      prefixes += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{per * i + j + 1}.0."),
                   (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{per * i + j + 1}.1.")]
    prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.",
                     f"input_blocks.{per * (i + 1)}.0.op."))
    for j in range(per):
      prefixes += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{per * i + j}.0."),
                   (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{per * i + j}.1.")]
    prefixes.append((f"up_blocks.{i}.upsamplers.0.",
                     f"output_blocks.{per * i + per - 1}.{2 if up_attn[i] else 1}."))
  out = {}
  for key, value in state.items():
    new, rest = _rename(key, prefixes)
    if ".resnets." in key:
      name, _, tail = rest.partition(".")
      rest = f"{_RESNET[name]}.{tail}"
    out["model.diffusion_model." + new + rest] = value
  return out


def vae_to_ldm(state: dict, config: dict) -> dict:
  """diffusers AutoencoderKL state_dict -> LDM `first_stage_model.*` keys."""
  n = len(config["block_out_channels"])
  prefixes = []
  for part in ("encoder", "decoder"):
    prefixes += [(f"{part}.conv_norm_out.", f"{part}.norm_out."),
                 (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")]
    prefixes += [(f"{part}.mid_block.resnets.{i}.", f"{part}.mid.block_{i + 1}.") for i in (0, 1)]
  for i in range(n):
    prefixes += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                 (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                 (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."),
                 (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")]
  out = {}
  for key, value in state.items():
    new, rest = _rename(key, prefixes) or ("", key)
    rest = rest.replace("conv_shortcut", "nin_shortcut")
    if ".mid_block.attentions." in key:
      name, _, tail = rest.rpartition(".")
      rest = f"{_VAE_ATTN[name]}.{tail}"
      if value.ndim == 2:  # LDM's attention projections are 1x1 convs
        value = value[:, :, None, None]
    out["first_stage_model." + new + rest] = value
  return out


def pipeline_to_ldm(pipe) -> dict:
  """A torch StableDiffusionPipeline (SD1: CLIP text) -> {LDM key: numpy array}."""
  state = lambda m: {k: v.detach().numpy() for k, v in m.state_dict().items()}  # noqa: E731
  out = unet_to_ldm(state(pipe.unet), dict(pipe.unet.config))
  out.update(vae_to_ldm(state(pipe.vae), dict(pipe.vae.config)))
  for k, v in state(pipe.text_encoder).items():
    if not k.endswith("position_ids"):
      out["cond_stage_model.transformer.text_model." + k.removeprefix("text_model.")] = v
  return {k: np.ascontiguousarray(v) for k, v in out.items()}
