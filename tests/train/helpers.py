"""Tiny digits datasets and configs shared by the train tests."""
from __future__ import annotations

import os

from synth_jax import config as config_lib

BASE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "train", "base.py")


def write_data(root) -> tuple[str, str]:
  """(real dataset dir, synthetic dataset dir): digits at 16 px; the 'synthetic' one re-split."""
  from synth_jax.data import digits
  real = digits.write_digits(str(root), name="digits16", size=16)
  syn = digits.write_digits(str(root), name="digits16_syn", size=16, seed=1)
  return real, syn


def tiny_config(workdir, real, syn, method="vanilla", steps1=2, steps2=2, **overrides):
  """A resnet:basic:1,1,1,1 at 16 px with batch 16 (2 per fake device): compiles in seconds."""
  c = config_lib.load_config(BASE + f":method={method}")
  c.workdir = str(workdir)
  c.dataset, c.synthetic = real, syn
  c.model = "resnet:basic:1,1,1,1"
  c.init = "scratch"
  c.augment.resolution = 16
  c.augment.min_scale = 0.6
  c.batch_size = 16
  c.eval_batch_size = 64
  c.phase1.epochs, c.phase1.steps = None, steps1
  c.phase2.epochs, c.phase2.steps = None, steps2
  c.phase1.learning_rate = c.phase2.learning_rate = 0.05
  c.log_every = 1
  c.checkpoint_every = 100
  c.keep_checkpoints = 10
  c.tensorboard = False
  for k, v in overrides.items():
    config_lib.apply_override(c, f"{k}={v}")
  return c
