"""Shared by configs/paper/*: the train base config and the papers' dataset lists.

Paper configs are loaded by path (`--config configs/paper/X.py`); they read this file and
configs/train/base.py with `synth_jax.config.import_file` (no sys.path edits). Every paper
number in these files is from /work/shared/papers/facts.md section 1.7 (secondary sources:
reviews quoting the paper; verify against the PDF). NOT FOUND means no source gave the number.

Data: registry names, each trained and tested on the registry entry's own splits (train_split /
test_split stay ''); downloads tfds cannot fetch (aircraft, cars, ImageNet's tars) are read from
`manual_dir`, one folder per dataset (default ~/downloads/<dataset>, e.g. ~/downloads/cars holding
stanford_cars/ as synth_jax/data/manual.py describes).

Weights: every paper config starts from the ImageNet checkpoint CHECKPOINTS names for its model
(both papers fine-tune ImageNet-pretrained models, facts.md 1.5; which checkpoints they used is
NOT FOUND, so these are ours). Put the files at those paths or pass --config.init=PATH; a missing
file is a one-line error before any data is read. A model axis takes its checkpoint from
`sweep_tied` (synth_jax.train.sweep.apply_tied).
"""
from synth_jax.config import import_file

# Li et al.'s 10 downstream datasets: 9 are named in the sources (registry names of
# synth_jax.data.registry); the 10th is NOT FOUND.
LI_DATASETS = ("aircraft", "cars", "dtd", "food101", "sun397", "caltech101", "pets", "dogs", "flowers")

# OURS (the papers' checkpoints are NOT FOUND): the standard ImageNet-1k weights of each library.
# ResNets: torchvision IMAGENET1K_V1 (download.pytorch.org/models/<file>). ViTs: timm's augreg
# in21k->in1k fine-tunes (hub folder timm/<name>: model.safetensors + config.json, whose
# pretrained_cfg mean/std the importer records).
CHECKPOINTS = {
    "resnet18": {"init": "~/weights/resnet18-f37072fd.pth", "init_format": "torchvision"},
    "resnet50": {"init": "~/weights/resnet50-0676ba61.pth", "init_format": "torchvision"},
    "vit_b16": {"init": "~/weights/vit_base_patch16_224.augreg_in21k_ft_in1k/model.safetensors",
                "init_format": "timm"},
    "vit_l16": {"init": "~/weights/vit_large_patch16_224.augreg_in21k_ft_in1k/model.safetensors",
                "init_format": "timm"},
}


def base(arg=None):
  """configs/train/base.py's get_config(arg)."""
  return import_file("../train/base.py", __file__).get_config(arg)


def paper_config(arg, *, title, axes, numbers, synthetic="runs/synthetic/{dataset}",
                 workdir="runs/paper", manual_dir="~/downloads/{dataset}"):
  """base(arg) + the sweep (axes as 'key=v1,v2' strings) + paper numbers keyed by cell."""
  c = base(arg)
  if not (arg and "init=" in arg):  # the checkpoint of the config's model (an arg init wins)
    for k, v in CHECKPOINTS[c.model].items():
      c[k] = v
  c.sweep_tied = {"model": {m: dict(v) for m, v in CHECKPOINTS.items()}}
  c.workdir = workdir
  c.synthetic = synthetic   # one synthetic dataset per real one: filled per sweep point
  c.data_dir = "~/tensorflow_datasets"
  if not any(a.startswith("dataset=") for a in axes):  # no dataset axis to fill the template
    manual_dir = manual_dir.replace("{dataset}", c.dataset)
  c.manual_dir = manual_dir  # read only by datasets built from downloads (or when it exists)
  c.sweep_title = title
  c.sweep_axes = tuple(axes)
  c.paper_numbers = dict(numbers)
  return c
