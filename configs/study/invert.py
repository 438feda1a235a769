"""Dataset Style Inversion on the 10-shot target images (seed 0's draw): one token, templates with
the token where the generator's captions put a style word ("a <dataset-style> digit").

  synth-jax invert --config configs/study/invert.py
"""
from synth_jax.config import import_file, parse_arg


def get_config(arg=None):
  a = parse_arg(arg, root="runs/study", model="", steps=400, seed=0)
  gen = import_file("generate.py", __file__)
  root = a.root.rstrip("/")
  import os
  model = a.model or os.path.normpath(gen.GENERATOR)
  c = import_file("../invert/base.py", __file__).get_config(
      f"model={model},dataset={root}/data/digits_target/1.0.0,shots=10,steps={a.steps},seed={a.seed}")
  c.resolution = 16         # the shipped generator was trained at 16 px
  c.dtype = "float32"
  c.token = import_file("prompts.py", __file__).TOKEN
  c.init_word = "thin"       # a style word the generator knows; the token moves from there
  c.templates = ["a {} digit", "a {} digit, drawn small", "a {} digit, near the edge"]
  c.center_crop = False
  c.flip = False             # a mirrored digit is another glyph
  c.batch_size = 10
  c.checkpoint_every = 100
  c.preview_images = 0
  c.workdir = f"{root}/invert"
  return c
