"""A real learning check: the trainer learns scikit-learn digits (proof that optimisation,
augmentation and evaluation fit together). Measured: see the assertion's figure in the report."""
import pytest

from synth_jax import runs
from synth_jax.train import stage
from tests.train import helpers


@pytest.mark.slow
def test_digits_vanilla_reaches_95_percent(tmp_path):
  real, syn = helpers.write_data(tmp_path / "data")
  cfg = helpers.tiny_config(tmp_path / "run", real, syn, steps2=300, batch_size=32, log_every=100)
  cfg.phase2.learning_rate = 0.1
  cfg.augment.flip = False       # a mirrored digit is another digit (or none)
  cfg.augment.min_scale = 0.8
  result = runs.run_stage("train", stage.train, cfg)
  assert result["num_classes"] == 10 and result["steps"] == [300]
  assert result["top1"] >= 0.95, result["top1"]
  assert result["top5"] >= result["top1"]
  assert min(v for v in result["per_class"].values()) >= 0.8
