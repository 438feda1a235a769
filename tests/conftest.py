"""Tests run on 8 fake CPU devices; slow tests run with --runslow (or a seeded subset, see below)."""
import os
import random

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the CUDA torch wheel must stay on the CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SYNTH_JAX_NO_PROGRESS", "1")

import pytest  # noqa: E402

# 0 by default: the default run must stay under 10 minutes on 2 cores, and the slow set alone is
# over 40 minutes now (multi-process runs, SD-shaped attention, finetune resume). CI and README's
# command run the fast set; `--runslow` runs everything, SYNTH_JAX_SLOW_FRACTION=0.2 a seeded fifth.
SLOW_FRACTION = float(os.environ.get("SYNTH_JAX_SLOW_FRACTION", "0"))


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", help="run every slow test")
  parser.addoption("--slow-seed", type=int, default=int(os.environ.get("SYNTH_JAX_SLOW_SEED", "0")),
                   help="seed that picks the subset of slow tests run without --runslow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  slow = sorted((i for i in items if i.get_closest_marker("slow")), key=lambda i: i.nodeid)
  rng = random.Random(config.getoption("--slow-seed"))
  keep = set(i.nodeid for i in rng.sample(slow, k=round(len(slow) * SLOW_FRACTION)))
  deselected = [i for i in slow if i.nodeid not in keep]
  if deselected:
    config.hook.pytest_deselected(items=deselected)
    items[:] = [i for i in items if i not in deselected]


@pytest.fixture
def tmp_run(tmp_path):
  """A fresh run directory."""
  d = tmp_path / "run"
  d.mkdir()
  return str(d)
