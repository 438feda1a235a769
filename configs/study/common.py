"""Shared by configs/study/*: where the study's artifacts live and the classifier every sweep trains.

All paths are under `root` (default runs/study, `--config` arg `root=...`), written by the
commands of configs/study/run.sh in order:
  <root>/data/digits_target/1.0.0       the target task (pencil style): train, test
  <root>/data/digits_source/1.0.0       the generator's training set (named renderings)
  <root>/gen/<set>/synthetic/1.0.0      synthetic sets: template, dsi, diversified, finetuned
The classifier (OURS, sized for a 2-core CPU): the smoke ResNet (resnet:basic:1,1,1,1, random
init: there are no pretrained weights offline, so "transfer" here is from the synthetic phase
only), 16 px input (the 32 px images resized: 4x cheaper on a CPU), batch 32, SGD lr 0.1; single-phase methods train `phase2.steps`, bridged methods
`phase1.steps` on synthetic then `phase2.steps` on real. 10-shot unless a sweep varies shots;
the whole synthetic set (80 per class = 8x the real images) unless a sweep varies volume.
"""
from synth_jax.config import import_file, parse_arg

SEEDS = "seed=0,1,2"
SETS = ("template", "dsi", "diversified", "finetuned")


def base(arg=None):
  return import_file("../train/base.py", __file__).get_config(arg)


def study_config(arg, *, title, axes, workdir, synthetic_set="template", method="vanilla"):
  """The smoke train config on the study's target data + the sweep (axes 'key=v1,v2' strings)."""
  a = parse_arg(arg, root="runs/study", shots=10, phase1_steps=100, phase2_steps=150,
                resolution=16)
  c = base(f"method={method},smoke")
  root = a.root.rstrip("/")
  c.dataset = f"{root}/data/digits_target/1.0.0"
  c.train_split, c.test_split = "train", "test"
  c.synthetic_set = synthetic_set  # a sweep axis may vary it: synthetic follows (templated)
  varied = any(x.startswith("synthetic_set=") for x in axes)
  c.synthetic = root + "/gen/" + ("{synthetic_set}" if varied else synthetic_set) + "/synthetic/1.0.0"
  c.shots = a.shots
  c.augment.resolution = a.resolution
  c.batch_size = 32
  c.eval_batch_size = 128
  c.phase1.steps = a.phase1_steps
  c.phase2.steps = a.phase2_steps
  c.checkpoint_every = 100
  c.workdir = f"{root}/{workdir}"
  c.sweep_title = title
  c.sweep_axes = tuple(axes) + (SEEDS,)
  c.paper_numbers = {}
  return c
