"""Config for `synth-jax generate`: Stable Diffusion -> a labelled synthetic dataset.

    synth-jax generate --config configs/generate/base.py:model=/models/sd15,classes=classes.txt \
        --config.workdir=runs/gen/cars
    synth-jax generate \
        --config configs/generate/base.py:model=/models/sd15,prompts=runs/prompts/cars/prompts.json \
        --config.images_per_class=1000 --config.workdir=runs/gen/cars

Paper settings (facts.md 1.3): Li et al. generate with SD v1.5, 1,000 images per class (0.5k-3k
in the volume study), baseline prompt "A good photo of the {class}" and DSI prompt "A {class} photo
in the style of S*" (both quoted by a machine review: pass them as `template`, with
`style_token_path` for S*). Sampler, steps, guidance and resolution are NOT FOUND for either paper,
so they are flags; our defaults are common SD v1.5 settings (DPM-Solver++ 2M, 25 steps, guidance
7.5, 512 px), not paper values.
"""
import ml_collections

from synth_jax.config import parse_arg


def get_config(arg=None):
  """`arg`: 'model=DIR,classes=FILE,prompts=FILE,n=INT,resolution=INT,seed=INT'."""
  a = parse_arg(arg, model="", classes="", prompts="", n=1000, resolution=512, seed=0)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.compile_cache = ""             # compiled-program cache folder ("" = ~/.cache/synth_jax/xla, "off")
  c.model_path = a.model            # diffusers SD folder (model_index.json, unet/, vae/, ...)
  # model_path may instead be a single-file checkpoint (.safetensors, original SD layout), converted
  # by torch diffusers; this diffusers folder (or hub id) gives its configs ('' = diffusers guesses
  # them from the tensor names and downloads them)
  c.single_file_config = ""
  # model_path may also be a Hub id (org/name), read from the Hugging Face cache (HF_HOME) as
  # diffusers does; offline (HF_HUB_OFFLINE=1) when cached. Its revision ('' = main) and weight
  # variant ('' = none, e.g. fp16).
  c.model_revision = ""
  c.model_variant = ""
  # LoRA files fused into the UNet / text encoders at load: 'path:scale[,path:scale...]'
  # (diffusers/PEFT or kohya safetensors)
  c.lora = ""
  c.dtype = "bfloat16"              # float32 | bfloat16 | float16 (params and compute)
  c.style_token_path = ""           # learned_embeds.safetensors from `synth-jax invert` (DSI)
  # What to generate.
  c.prompts_path = a.prompts        # prompts.json (`synth-jax prompts`); '' = class_names+template
  c.class_names = a.classes         # a text file (one class per line), "a,b,c", or a list
  c.template = "a good photo of the {}"  # Li et al.'s single template (facts.md 1.3)
  c.classes = []                    # a subset of class names to generate ([] = all)
  # {kind: weight} over prompts.json kinds (template, cd, sd, dsi): a kind is drawn by weight, then
  # one of its prompts uniformly; a kind missing from the dict weighs 0. None = the weights the
  # prompts stage recorded in prompts.json (else every kind 1). Yu et al.'s CD/SD mix is not
  # stated (facts.md). CLI: --config.prompt_weights="{'cd': 1, 'sd': 1}"
  c.prompt_weights = None
  c.images_per_class = a.n
  c.negative_prompt = ""
  c.seed = a.seed
  # How.
  c.resolution = a.resolution       # pixels, divisible by 8; 0 = the model's default
  c.steps = 25
  c.guidance = 7.5
  c.scheduler = "dpm++2m"           # dpm++2m | ddim | euler
  # diffusers scheduler_config keys to override, e.g. {"timestep_spacing": "trailing"}
  c.scheduler_overrides = {}
  c.batch_size = 16                 # images per sampler call per host; divisible by its data axes
  c.images_per_shard = 256
  c.image_format = "png"            # png (lossless, ~0.3-0.5 MB at 512 px) | jpeg (~5x smaller)
  c.jpeg_quality = 95
  c.encode_threads = 0              # host threads encoding images while the sampler runs; 0 = auto
  c.attention = "auto"              # auto (splash on TPU, cuDNN flash on GPU bf16) | xla | cudnn | splash
  c.fsdp = False                    # shard the UNet's large params over the mesh's fsdp axis
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c
