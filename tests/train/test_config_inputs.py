"""What the train config feeds the data layer: registry names (manual datasets, their splits) and
every augmentation field, from the CLI through to the grain pipeline."""
import dataclasses

import numpy as np
import pytest

from synth_jax import cli
from synth_jax.data import pipeline
from synth_jax.errors import ConfigError
from synth_jax.train import stage
from tests.data.test_registry import _fake_aircraft
from tests.train import helpers


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  from synth_jax.data import digits
  return digits.write_digits(str(tmp_path_factory.mktemp("data")), name="digits16", size=16)


def test_manual_dataset_by_registry_name_on_its_splits(tmp_path):
  _fake_aircraft(tmp_path / "dl")  # trainval = 3 images (train 2 + val 1), test = 2
  cfg = helpers.tiny_config(tmp_path / "run", "aircraft", "", data_dir=str(tmp_path / "tfds"),
                            manual_dir=str(tmp_path / "dl"))
  real, syn, test = stage.open_data(cfg, False)
  assert syn is None
  assert (real.split.split, len(real.split), test.split, len(test)) == ("trainval", 3, "test", 2)
  assert real.split.class_names == ["707-320", "A300B4", "F/A-18"]
  np.testing.assert_array_equal(real.split.labels(), [0, 2, 1])
  cfg.train_split = "train"  # an explicit split wins over the registry's
  assert len(stage.open_data(cfg, False)[0].split) == 2
  cfg.manual_dir = ""
  with pytest.raises(ConfigError, match=r"'aircraft' .*--config\.manual_dir="):
    stage.open_data(cfg, False)


def test_base_config_exposes_every_augment_field():
  c = helpers.tiny_config("/tmp/unused", "", "")
  assert set(c.augment) == {f.name for f in dataclasses.fields(pipeline.AugmentConfig)}


def test_augment_overrides_from_the_cli_reach_the_pipeline(real, tmp_path, monkeypatch):
  seen = []

  class SpyLoad(pipeline._Load):  # the per-example loader: the AugmentConfig it applies
    def __init__(self, streams, cfg, train):
      seen.append((train, cfg.color_jitter, cfg.crop_pct))
      super().__init__(streams, cfg, train)

  def first_batches(config):
    r, _, test = stage.open_data(config, False)
    ds, _ = stage.phase_dataset(config, stage.plan(config)[0], 0, r, None)
    ev = pipeline.make_eval_dataset(test, 8, augment=config.augment.to_dict())
    out = []
    for it in (iter(ds), iter(ev)):
      out.append(next(it)["image"])
      stage._close(it)
    return out

  batches = {}
  monkeypatch.setattr(pipeline, "_Load", SpyLoad)
  monkeypatch.setattr(stage, "train", lambda c: batches.setdefault(c.augment.color_jitter,
                                                                   first_batches(c)))
  args = ["train", "--config", helpers.BASE + ":smoke", f"--config.dataset={real}",
          "--config.augment.resolution=16", "--config.batch_size=8"]
  assert cli.main(args + [f"--config.workdir={tmp_path}/a", "--config.augment.color_jitter=0.4",
                          "--config.augment.crop_pct=0.5"]) == 0
  assert cli.main(args + [f"--config.workdir={tmp_path}/b"]) == 0
  assert seen == [(True, 0.4, 0.5), (False, 0.4, 0.5), (True, 0.0, 0.875), (False, 0.0, 0.875)]
  # Same seed, same crops: the jitter alone changes the training pixels, crop_pct the eval ones.
  assert not np.array_equal(batches[0.4][0], batches[0.0][0])
  assert not np.array_equal(batches[0.4][1], batches[0.0][1])
