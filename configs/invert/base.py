"""Config for `synth-jax invert`: Dataset Style Inversion (Li et al.) or per-class textual inversion.

    synth-jax invert --config configs/invert/base.py:model=/models/sd15,dataset=runs/dtd/tfds/dtd/1.0.0 \
        --config.workdir=runs/invert/dtd
    synth-jax invert --config configs/invert/base.py:model=/models/sd15,dataset=cars,per_class=True,steps=5000 ...

Paper (facts.md 1.4): ONE token for the whole dataset, the diffusion model frozen, 20k iterations
(quoted for Aircraft); per-class textual inversion is priced at 5k iterations per class. NOT FOUND
in the paper, ours (standard textual inversion): AdamW lr 5e-3, weight decay 1e-2, batch 8,
512 px, init word "photo", style templates without the class name, random flips.
"""
import ml_collections

from synth_jax.config import parse_arg


def get_config(arg=None):
  """`arg`: 'model=DIR,dataset=DIR_OR_NAME,shots=INT,steps=INT,per_class=BOOL,seed=INT'."""
  a = parse_arg(arg, model="", dataset="", shots=-1, steps=20000, per_class=False, seed=0,
                resolution=512)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.compile_cache = ""             # compiled-program cache folder ("" = ~/.cache/synth_jax/xla, "off")
  c.model_path = a.model
  c.dtype = "bfloat16"            # frozen UNet / VAE / text encoder; the token row is float32
  c.dataset = a.dataset           # real dataset dir (from `synth-jax data import`) or tfds name
  c.data_dir = ""
  c.split = "train"
  c.shots = a.shots               # images per class used (-1 = all)
  c.max_images = 0                # cap on images (0 = no cap), drawn by seed
  c.resolution = a.resolution     # images become resolution x resolution
  c.center_crop = True            # resize shorter side + center crop; False: squash to a square
  c.flip = True                   # also train on mirrored images
  c.token = "<dataset-style>"
  c.init_word = "photo"
  c.per_class = a.per_class       # one token per class (DA-Fusion style), class prompts
  c.init_from_class_name = True   # per_class: start each token at its class name's embedding
  c.templates = []                # [] = DSI style templates (or class templates when per_class)
  c.steps = a.steps
  # length: steps, else examples, else epochs of the images (config.steps_from; pass steps=0
  # to use the others)
  c.examples = 0
  c.epochs = 0.0
  c.batch_size = 8
  c.optimizer = "adamw"           # adamw | adam | sgd (PyTorch semantics, see invert_state.py)
  c.learning_rate = 5e-3
  c.weight_decay = 1e-2           # adamw: decoupled; adam/sgd: added to the gradient
  c.momentum = 0.0                # sgd only
  c.seed = a.seed
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.encode_batch_size = 16
  c.preview_images = 8            # contact sheet at the end (0 = none)
  c.preview_steps = 25
  c.preview_prompt = "a photo in the style of {}"
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.fsdp = False                  # split the frozen weights over mesh.fsdp (with --config.mesh.fsdp=N)
  return c
