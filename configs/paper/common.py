"""Shared by configs/paper/*: the train base config and the papers' dataset lists.

Paper configs are loaded by path (`--config configs/paper/X.py`); they read this file and
configs/train/base.py with `synth_jax.config.import_file` (no sys.path edits). Every paper
number in these files is from /work/shared/papers/facts.md section 1.7 (secondary sources:
reviews quoting the paper; verify against the PDF). NOT FOUND means no source gave the number.

Data: registry names, each trained and tested on the registry entry's own splits (train_split /
test_split stay ''); downloads tfds cannot fetch (aircraft, cars, ImageNet's tars) are read from
`manual_dir`, one folder per dataset (default ~/downloads/<dataset>, e.g. ~/downloads/cars holding
stanford_cars/ as synth_jax/data/manual.py describes).
"""
from synth_jax.config import import_file

# Li et al.'s 10 downstream datasets: 9 are named in the sources (registry names of
# synth_jax.data.registry); the 10th is NOT FOUND.
LI_DATASETS = ("aircraft", "cars", "dtd", "food101", "sun397", "caltech101", "pets", "dogs", "flowers")


def base(arg=None):
  """configs/train/base.py's get_config(arg)."""
  return import_file("../train/base.py", __file__).get_config(arg)


def paper_config(arg, *, title, axes, numbers, synthetic="runs/synthetic/{dataset}",
                 workdir="runs/paper", manual_dir="~/downloads/{dataset}"):
  """base(arg) + the sweep (axes as 'key=v1,v2' strings) + paper numbers keyed by cell."""
  c = base(arg)
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
