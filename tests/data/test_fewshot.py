"""Few-shot selection is a function of (labels, k, seed): same in another process, per seed."""
import json
import subprocess
import sys

import numpy as np
import pytest

from synth_jax.data import sources
from synth_jax.errors import DataError

LABELS = np.random.default_rng(0).integers(0, 7, 500)


def test_k_per_class_and_all():
  idx = sources.few_shot_indices(LABELS, 4, seed=0)
  assert np.all(np.bincount(LABELS[idx], minlength=7) == 4)
  assert np.all(np.diff(idx) > 0)
  np.testing.assert_array_equal(sources.few_shot_indices(LABELS, "all", 0), np.arange(500))
  with pytest.raises(DataError, match="k=0"):
    sources.few_shot_indices(LABELS, 0, 0)


def test_identical_in_another_process_and_different_for_another_seed():
  here = sources.few_shot_indices(LABELS, 5, seed=11)
  code = ("import json, numpy as np; from synth_jax.data import sources; "
          "labels = np.random.default_rng(0).integers(0, 7, 500); "
          "print(json.dumps(sources.few_shot_indices(labels, 5, seed=11).tolist()))")
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
  np.testing.assert_array_equal(json.loads(out.stdout.strip().splitlines()[-1]), here)
  other = sources.few_shot_indices(LABELS, 5, seed=12)
  assert not np.array_equal(here, other)


def test_class_choice_is_stable_when_k_grows():
  small = set(sources.few_shot_indices(LABELS, 2, seed=3))
  large = set(sources.few_shot_indices(LABELS, 6, seed=3))
  assert small <= large  # the 2-shot images are among the 6-shot ones


def test_label_map_by_name():
  m = sources.label_map(["Sea_Turtle", "cat"], ["cat", "dog", "sea turtle"])
  np.testing.assert_array_equal(m, [2, 0])
  with pytest.raises(DataError, match=r"\['zebra'\].*'dog'"):
    sources.label_map(["cat", "zebra"], ["cat", "dog"])
