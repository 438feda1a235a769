"""Config for `synth-jax generate`: Stable Diffusion -> a labelled synthetic dataset.

    synth-jax generate --config configs/generate/base.py:model=/models/sd15,classes=classes.txt \
        --config.workdir=runs/gen/cars
    synth-jax generate --config configs/generate/base.py:model=/models/sd15,prompts=runs/prompts/cars/prompts.json \
        --config.images_per_class=1000 --config.workdir=runs/gen/cars

Paper settings (facts.md): Li et al. generate with SD v1.5 and one template "a photo of a {class}"
(their DSI rows add "in the style of <token>"); Yu et al. use SD with CD/SD prompts. Steps,
guidance and scheduler are not stated by either paper: ours are diffusers' SD defaults (DPM-Solver++
2M at 25 steps, guidance 7.5).
"""
import ml_collections

from synth_jax.config import parse_arg


def get_config(arg=None):
  """`arg`: 'model=DIR,classes=FILE,prompts=FILE,n=INT,resolution=INT,seed=INT'."""
  a = parse_arg(arg, model="", classes="", prompts="", n=100, resolution=512, seed=0)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.model_path = a.model            # diffusers SD folder (model_index.json, unet/, vae/, ...)
  c.dtype = "bfloat16"              # float32 | bfloat16 | float16 (params and compute)
  c.style_token_path = ""           # learned_embeds.safetensors from `synth-jax invert` (DSI)
  # What to generate.
  c.prompts_path = a.prompts        # prompts.json from `synth-jax prompts`; '' = class_names+template
  c.class_names = a.classes         # a text file (one class per line), "a,b,c", or a list
  c.template = "a photo of a {}"
  c.classes = []                    # a subset of class names to generate ([] = all)
  c.prompt_weights = {}             # {kind: weight} over prompts.json kinds ({} = uniform)
  c.images_per_class = a.n
  c.negative_prompt = ""
  c.seed = a.seed
  # How.
  c.resolution = a.resolution       # pixels, divisible by 8; 0 = the model's default
  c.steps = 25
  c.guidance = 7.5
  c.scheduler = "dpm++2m"           # dpm++2m | ddim | euler
  c.scheduler_overrides = {}        # diffusers scheduler_config keys, e.g. {"timestep_spacing": "trailing"}
  c.batch_size = 16                 # global batch per step; divisible by the data devices
  c.images_per_shard = 256
  c.attention = "auto"              # auto (cuDNN flash on GPU bf16) | xla | cudnn
  c.fsdp = False                    # shard the UNet's large params over the mesh's fsdp axis
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c
