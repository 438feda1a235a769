"""Import a local image folder (root/<class>/*.jpg) or a CSV (path,label) as a tfds dataset.

  synth-jax data import --config configs/data/import.py:source=~/photos,name=photos,test_fraction=0.2 \
      --config.workdir=runs/photos
"""
from synth_jax.config import ConfigDict, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, source="", name="", encoding="jpeg", test_fraction=0.0, seed=0,
                  resize_shorter=0)
  config = ConfigDict()
  config.workdir = ""
  config.seed = arg.seed
  config.data = ConfigDict(dict(source=arg.source, name=arg.name, data_dir="",
                                encoding=arg.encoding, test_fraction=arg.test_fraction,
                                seed=arg.seed, shard_size=1000, csv_root="",
                                resize_shorter=arg.resize_shorter))
  return config
