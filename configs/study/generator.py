"""The shipped generator (synth_jax/assets/digits_generator): configs/finetune/digits_scratch.py
trained from scratch on the study's source images, each with its own caption.

  python -m synth_jax.data.digit_styles runs/study/data     # also writes digits_source_captions
  synth-jax finetune --config configs/study/generator.py --config.workdir=runs/study/generator
  # -> runs/study/generator/pipeline (diffusers folder); copied to synth_jax/assets/digits_generator

digits_source_captions labels every image by its caption ("a thick digit three, drawn small"), so
the class-conditional trainer with the template "{}" trains on each image's own caption. The
target style and every test / target-train digit are absent from it (digit_styles.py).
"""
from synth_jax.config import import_file, parse_arg


def get_config(arg=None):
  a = parse_arg(arg, root="runs/study", steps=7000, vae_steps=1000, seed=0)
  root = a.root.rstrip("/")
  c = import_file("../finetune/digits_scratch.py", __file__).get_config(
      f"dataset={root}/data/digits_source_captions/1.0.0,steps={a.steps},vae_steps={a.vae_steps},"
      f"seed={a.seed}")
  c.templates = ["{}"]
  c.preview_images = 20
  c.workdir = f"{root}/generator"
  return c
