"""A config used by the foundation tests."""
import ml_collections

from synth_jax.config import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, size="small", steps=10, smoke=False)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.seed = 0
  c.size = arg.size
  c.steps = arg.steps if not arg.smoke else 1
  c.lr = 0.1
  c.use_mixup = True
  c.classes = ("cat", "dog")
  c.model = ml_collections.ConfigDict({"name": "resnet18", "width": 64})
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.optional = None
  return c
