"""The CAS classifier: near its ceiling on real digits, at chance on noise."""
import numpy as np
import pytest

from synth_jax.data import digits
from synth_jax.diffusion import cas


@pytest.mark.slow
def test_cas_classifier_labels_real_digits_and_not_noise(tmp_path):
  data = digits.write_digits(str(tmp_path / "data"), size=16)
  train_x, train_y, names = cas.split_arrays(data, "train", 16)
  test_x, test_y, _ = cas.split_arrays(data, "test", 16)
  clf = cas.fit_classifier(train_x, train_y)
  real = cas.accuracy(clf, test_x, test_y)
  noise = np.random.default_rng(0).integers(0, 256, test_x.shape).astype(np.uint8)
  chance = cas.accuracy(clf, noise, test_y)
  print(f"CAS classifier: real digits test {real:.3f}, noise {chance:.3f}")
  assert len(names) == 10 and train_x.shape[1:] == (16, 16, 3)
  assert real >= 0.95
  assert chance <= 0.3
