"""Config for `synth-jax finetune`: train a Stable Diffusion UNet on a real dataset's images.

    synth-jax finetune --config configs/finetune/base.py:model=/models/sd15,dataset=cars \
        --config.workdir=runs/finetune/cars
    # then: synth-jax generate --config configs/generate/base.py:model=runs/finetune/cars/pipeline,...

Yu et al. compare against fine-tuning SD on the real training set (Azizi et al. 2023); neither
paper states that recipe's settings (facts.md), so the optimisation defaults are those of diffusers'
`examples/text_to_image/train_text_to_image.py` README run (lr 1e-5 constant, AdamW betas 0.9/0.999
wd 1e-2 eps 1e-8, clip 1.0, EMA, 15000 steps) except where marked "ours".
"""
import ml_collections

from synth_jax.config import parse_arg


def get_config(arg=None):
  """`arg`: 'model=DIR,dataset=DIR_OR_NAME,steps=INT,resolution=INT,seed=INT,shots=INT'."""
  a = parse_arg(arg, model="", dataset="", steps=15000, resolution=512, seed=0, shots=-1)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.compile_cache = ""             # compiled-program cache folder ("" = ~/.cache/synth_jax/xla, "off")
  c.model_path = a.model          # diffusers SD folder; its components are copied into the export
  c.init = "pretrained"           # or "scratch": a small random pipeline (configs/finetune/
  # digits_scratch.py holds its sizes), VAE trained first, then the UNet
  c.dtype = "bfloat16"            # compute dtype; master weights, loss and updates stay float32
  # data (the same keys and latent cache as `synth-jax invert`)
  c.dataset = a.dataset
  c.data_dir = ""
  c.split = "train"
  c.shots = a.shots               # images per class (-1 = all)
  c.max_images = 0                # cap on images (0 = no cap), drawn by seed
  c.resolution = a.resolution
  c.center_crop = True            # diffusers: --center_crop (ours: on; off squashes to a square)
  c.flip = True                   # diffusers: --random_flip (ours: on)
  c.encode_batch_size = 16
  # captions
  c.prompts_path = ""             # prompts.json of the prompts stage; '' = templates
  c.templates = ["a photo of a {}"]
  c.caption_dropout = 0.1         # ours: share of empty captions, for classifier-free guidance
  # (diffusers' --proportion_empty_prompts, 0 in train_text_to_image.py)
  # objective
  c.snr_gamma = 0.0               # min-SNR-gamma weighting (0 = off; 5.0 is the paper's value)
  c.noise_offset = 0.0            # offset noise (0 = off; ~0.05-0.1 when used)
  # optimisation
  c.steps = a.steps
  # the run's length: steps, else examples, else epochs of the training images (the first > 0
  # wins; config.steps_from, the rule train's phases use too): pass steps=0 to use the others
  c.examples = 0
  c.epochs = 0.0
  c.batch_size = 32               # global, per optimizer step
  c.grad_accum = 1                # micro-batches per step (each batch_size / grad_accum)
  c.learning_rate = 1e-5
  c.warmup_steps = 0              # linear warmup, then constant
  c.adam_beta1 = 0.9
  c.adam_beta2 = 0.999
  c.adam_epsilon = 1e-8
  c.weight_decay = 1e-2
  c.max_grad_norm = 1.0           # 0 = no clipping
  c.ema = True                    # EMA of the trained weights, exported instead of them
  c.ema_decay = 0.9999
  c.remat = False                 # recompute UNet block activations in the backward pass
  c.train_text_encoder = False
  c.seed = a.seed
  # run
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.preview_every = 0             # a contact sheet every N steps (0 = only at the end)
  c.preview_images = 8            # 0 = no previews
  c.preview_steps = 25
  c.preview_guidance = 7.5
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c
