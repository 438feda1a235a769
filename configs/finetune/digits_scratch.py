"""A small Stable Diffusion trained from scratch (`init=scratch`) on a small offline dataset.

    python -c "from synth_jax.data import digits; digits.write_digits('data')"  # data/digits/1.0.0
    synth-jax finetune --config configs/finetune/digits_scratch.py:dataset=data/digits/1.0.0 \
        --config.workdir=runs/finetune/digits_scratch
    # -> runs/finetune/digits_scratch/pipeline (diffusers folder), vae_log.json (held-out PSNR)

VAE first (reconstruction + KL, `scratch.vae_*`), then the UNet and the text encoder on its
latents with the base recipe's objective. Sizes and steps are ours, chosen to train in minutes on
2 CPU cores (16 px images, twice the digits' own 8 px; 8x8x4 latents); point `dataset` (and `templates` or `prompts_path`)
at another dataset of small images to train on it instead. Every key of base.py applies.
"""
import ml_collections

from synth_jax.config import import_file
from synth_jax.config import parse_arg

base = import_file("base.py", __file__)


def get_config(arg=None):
  """`arg`: 'dataset=DIR_OR_NAME,steps=INT,vae_steps=INT,resolution=INT,seed=INT,shots=INT'."""
  a = parse_arg(arg, dataset="", steps=4000, vae_steps=400, resolution=16, seed=0, shots=-1)
  c = base.get_config(f"dataset={a.dataset},steps={a.steps},resolution={a.resolution},"
                      f"seed={a.seed},shots={a.shots}")
  c.init = "scratch"
  c.dtype = "float32"             # CPU: bf16 is emulated there and slower
  c.templates = ["a photo of the digit {}"]
  c.caption_dropout = 0.1
  c.center_crop = False           # digits are square already
  c.flip = False                  # a mirrored digit is another glyph
  c.train_text_encoder = True     # a random text encoder must learn the class names too
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.warmup_steps = 100
  c.weight_decay = 0.0
  c.ema = True
  c.ema_decay = 0.999
  c.checkpoint_every = 500
  c.preview_every = 0
  c.preview_images = 20           # two of each digit
  c.preview_steps = 20
  c.preview_guidance = 3.0
  c.encode_batch_size = 64
  s = ml_collections.ConfigDict()
  s.max_length = 16               # tokens per caption (class prompts are short)
  s.vae_steps = a.vae_steps
  s.vae_batch_size = 32
  s.vae_learning_rate = 1e-3
  s.vae_kl_weight = 1e-4          # per latent element, against the per-pixel MSE
  s.vae_holdout = 0.1             # share of the images never trained on, for the PSNR
  # diffusers / transformers config keys over synth_jax.diffusion.tiny.tiny_configs
  s.vae = ml_collections.ConfigDict(dict(
      block_out_channels=(16, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
      mid_block_add_attention=False))
  s.unet = ml_collections.ConfigDict(dict(
      block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
      attention_head_dim=8, norm_num_groups=8,
      down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")))
  s.text_encoder = ml_collections.ConfigDict(dict(
      hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
      projection_dim=32))
  s.scheduler = ml_collections.ConfigDict(dict(prediction_type="epsilon"))
  c.scratch = s
  return c
