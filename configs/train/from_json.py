"""A sweep point's config saved as JSON by `synth-jax sweep --print-only`.

  synth-jax train --config configs/train/from_json.py:runs/grid/points/method=mix,seed=0/sweep_point.json
"""
from synth_jax.train.sweep import load_json_config


def get_config(arg=None):
  return load_json_config(arg or "")
