"""Yu et al.'s alternative: fine-tune the shipped generator on the 10-shot target images (seed 0's
draw; template captions "a digit three"), then generate the `finetuned` set from it.

  synth-jax finetune --config configs/study/finetune.py
"""
import os

from synth_jax.config import import_file, parse_arg


def get_config(arg=None):
  a = parse_arg(arg, root="runs/study", model="", steps=500, seed=0)
  gen = import_file("generate.py", __file__)
  root = a.root.rstrip("/")
  model = a.model or os.path.normpath(gen.GENERATOR)
  # resolution 16: the shipped generator was trained at 16 px
  c = import_file("../finetune/base.py", __file__).get_config(
      f"model={model},dataset={root}/data/digits_target/1.0.0,steps={a.steps},resolution=16,"
      f"seed={a.seed},shots=10")
  c.templates = ["a digit {}"]
  c.dtype = "float32"
  c.flip = False
  c.center_crop = False
  c.batch_size = 20
  c.learning_rate = 1e-4   # ours: a small model, few steps
  c.ema = False            # 500 steps: EMA at 0.9999 would export nearly the original weights
  c.checkpoint_every = 250
  c.preview_images = 0
  c.workdir = f"{root}/finetune"
  return c
