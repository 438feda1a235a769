"""Shared fixtures for the data tests: the digits dataset written once per session."""
import pytest

from synth_jax.data import digits


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
  return digits.write_digits(str(tmp_path_factory.mktemp("tfds")), size=16)
