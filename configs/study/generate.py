"""The study's synthetic sets: 80 images per class (8x the 10-shot real images) at the generator's
own resolution (16 px for the shipped one; the classifier reads 16 px).

  synth-jax generate --config configs/study/generate.py:set=template
  synth-jax generate --config configs/study/generate.py:set=diversified   # after prompts.py:set=diversified
  synth-jax generate --config configs/study/generate.py:set=dsi           # after invert.py and prompts.py:set=dsi
  synth-jax generate --config configs/study/generate.py:set=finetuned     # after finetune.py

`model=` defaults to the shipped generator (synth_jax/assets/digits_generator); the finetuned set
uses the fine-tuned copy. Template prompts say only "a digit three": no style, no context.
"""
import os

from synth_jax.config import import_file, parse_arg

GENERATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "synth_jax",
                         "assets", "digits_generator")
CLASSES = "zero,one,two,three,four,five,six,seven,eight,nine"


def get_config(arg=None):
  a = parse_arg(arg, set="template", root="runs/study", model="", n=80, seed=0)
  root = a.root.rstrip("/")
  model = a.model or (f"{root}/finetune/pipeline" if a.set == "finetuned" else os.path.normpath(GENERATOR))
  c = import_file("../generate/base.py", __file__).get_config(f"model={model},n={a.n},resolution=0,seed={a.seed}")
  c.class_names = CLASSES
  c.template = "a digit {}"
  if a.set in ("diversified", "dsi"):
    c.prompts_path = f"{root}/prompts/{a.set}/prompts.json"
  if a.set == "dsi":
    c.style_token_path = f"{root}/invert/learned_embeds.safetensors"
  if a.set not in ("template", "diversified", "dsi", "finetuned"):
    from synth_jax.errors import ConfigError
    raise ConfigError(f"set={a.set!r} is unknown; use template, diversified, dsi or finetuned")
  c.dtype = "float32"       # CPU: fp32 convolutions are faster than bf16 there
  c.steps = 20              # as the CAS in TRAINED.md
  # diffusers' default; chosen on the generator's CAS alone, before any study run (20 images per
  # digit: 31% at guidance 1, 66.5% at 3, 81.5% at 5, 88.5% at 7.5; TRAINED.md)
  c.guidance = 7.5
  c.batch_size = 40
  c.images_per_shard = 200
  c.workdir = f"{root}/gen/{a.set}"
  return c
