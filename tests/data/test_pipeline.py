"""grain pipelines: determinism, state restore, multi-host split, mixing, pairing, eval masks."""
import numpy as np
import pytest

from synth_jax.data import pipeline, sources, writer as writer_lib
from synth_jax.errors import ConfigError

ONE = dict(process_index=0, process_count=1)


@pytest.fixture(scope="module")
def train(digits_dir):
  return sources.open_split(digits_dir, "train")


@pytest.fixture(scope="module")
def test_split(digits_dir):
  return sources.open_split(digits_dir, "test")


def _take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def test_train_batches_deterministic_and_seeded(train):
  a = _take(pipeline.make_train_dataset(train, 32, seed=0, resolution=16, **ONE), 3)
  b = _take(pipeline.make_train_dataset(train, 32, seed=0, resolution=16, **ONE), 3)
  c = _take(pipeline.make_train_dataset(train, 32, seed=1, resolution=16, **ONE), 3)
  assert a[0]["image"].shape == (32, 16, 16, 3) and a[0]["image"].dtype == np.float32
  assert a[0]["label"].dtype == np.int32 and set(a[0]) == {"image", "label", "domain"}
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert not np.array_equal(a[0]["label"], c[0]["label"])
  # Normalized with ImageNet statistics: a white pixel maps to (1 - mean) / std.
  assert abs(a[0]["image"].max() - (1 - 0.406) / 0.225) < 1e-4


def test_epoch_covers_every_example_once(train):
  n = len(train)
  ds = pipeline.make_train_dataset(train, 1, seed=3, resolution=8, num_epochs=1, **ONE)
  labels = np.concatenate([b["label"] for b in ds])
  assert len(labels) == n
  np.testing.assert_array_equal(np.bincount(labels), np.bincount(train.labels()))


def test_state_restore_continues_with_next_element(train):
  ds = pipeline.make_train_dataset(train, 16, seed=0, resolution=16, **ONE)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  restored = iter(pipeline.make_train_dataset(train, 16, seed=0, resolution=16, **ONE))
  restored.set_state(state)
  for e in expected:
    got = next(restored)
    np.testing.assert_array_equal(got["image"], e["image"])
    np.testing.assert_array_equal(got["label"], e["label"])


def test_hosts_split_the_global_batch(train):
  whole = _take(pipeline.make_train_dataset(train, 8, seed=0, resolution=8, **ONE), 2)
  hosts = [_take(pipeline.make_train_dataset(train, 8, seed=0, resolution=8, process_index=p,
                                             process_count=2), 2) for p in range(2)]
  for step in range(2):
    assert hosts[0][step]["image"].shape[0] == 4
    merged = np.empty_like(whole[step]["image"])
    merged[0::2], merged[1::2] = hosts[0][step]["image"], hosts[1][step]["image"]
    np.testing.assert_array_equal(merged, whole[step]["image"])
  with pytest.raises(ConfigError, match="multiple of the process count"):
    pipeline.make_train_dataset(train, 7, seed=0, process_index=0, process_count=2)


def test_mixing_ratio_over_10k_examples(train, test_split):
  real = pipeline.Stream(train, domain=0)
  syn = pipeline.Stream(test_split, domain=1)
  ds = pipeline.make_train_dataset([real, syn], 500, seed=0, weights=[3, 1], resolution=4,
                                   **ONE)
  domains = np.concatenate([b["domain"] for b in _take(ds, 20)])
  assert len(domains) == 10_000
  assert abs(domains.mean() - 0.25) < 0.01


def test_paired_batches_have_requested_composition(train, test_split):
  ds = pipeline.make_paired_dataset(train, test_split, real_batch=6, synthetic_batch=10, seed=0,
                                    resolution=8, **ONE)
  for b in _take(ds, 3):
    assert b["image"].shape == (16, 8, 8, 3)
    np.testing.assert_array_equal(b["domain"], [0] * 6 + [1] * 10)
  host = _take(pipeline.make_paired_dataset(train, test_split, real_batch=6, synthetic_batch=10,
                                            seed=0, resolution=8, process_index=1,
                                            process_count=2), 1)[0]
  np.testing.assert_array_equal(host["domain"], [0] * 3 + [1] * 5)


def test_eval_pads_and_masks_each_example_once(test_split):
  n = len(test_split)
  seen = []
  for p in range(2):
    ds = pipeline.make_eval_dataset(test_split, 64, resolution=16, process_index=p,
                                    process_count=2)
    batches = list(ds)
    assert len(batches) == -(-n // 64) and all(b["image"].shape[0] == 32 for b in batches)
    seen.append(np.concatenate([b["label"][b["mask"]] for b in batches]))
  labels = np.concatenate(seen)
  assert len(labels) == n
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.bincount(test_split.labels()))


def test_corrupt_images_are_skipped_with_a_warning(tmp_path, caplog):
  w = writer_lib.DatasetWriter(str(tmp_path), "bad", writer_lib.image_features(["a", "b"]))
  good = {"image": np.full((8, 8, 3), 200, np.uint8), "label": 1}
  w.write_shard("train", 0, 1, [good, {"image": b"\x89PNG not really", "label": 0}, good])
  split = sources.open_split(w.finalize(["train"]), "train")
  with caplog.at_level("WARNING"):
    batch = _take(pipeline.make_train_dataset(split, 6, seed=0, resolution=8, **ONE), 1)[0]
  assert (batch["label"] == 1).all()  # the corrupt record (label 0) never appears
  assert "bad:train[1]" in caplog.text
  assert pipeline.corrupt_counts()["bad:train"] >= 1
  ev = list(pipeline.make_eval_dataset(split, 3, resolution=8, **ONE))
  np.testing.assert_array_equal(ev[0]["mask"], [True, False, True])


@pytest.mark.slow
def test_worker_processes_give_the_same_stream_and_restore(train):
  ref = _take(pipeline.make_train_dataset(train, 32, seed=0, resolution=16, **ONE), 4)
  ds = pipeline.make_train_dataset(train, 32, seed=0, resolution=16, workers=2, **ONE)
  it = iter(ds)
  got = [next(it) for _ in range(2)]
  state = it.get_state()
  got += [next(it) for _ in range(2)]
  for a, b in zip(ref, got):
    np.testing.assert_array_equal(a["image"], b["image"])
  it2 = iter(pipeline.make_train_dataset(train, 32, seed=0, resolution=16, workers=2, **ONE))
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["image"], ref[2]["image"])
  it.close()
  it2.close()


def test_uint8_output_normalized_on_device_matches_host(train):
  from synth_jax.data import mixup
  host = _take(pipeline.make_train_dataset(train, 8, seed=0, resolution=16, **ONE), 1)[0]
  raw = _take(pipeline.make_train_dataset(train, 8, seed=0, resolution=16, augment={"uint8": True},
                                          **ONE), 1)[0]
  assert raw["image"].dtype == np.uint8
  np.testing.assert_allclose(np.asarray(mixup.normalize_images(raw["image"])), host["image"],
                             atol=1e-5)


def test_iterator_state_saved_with_orbax_continues_exactly(train, tmp_path):
  import grain
  import orbax.checkpoint as ocp
  ds = pipeline.make_train_dataset(train, 8, seed=0, resolution=8, **ONE)
  it = iter(ds)
  for _ in range(2):
    next(it)
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as mngr:
    mngr.save(2, args=ocp.args.Composite(ds=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  expected = next(it)
  fresh = iter(pipeline.make_train_dataset(train, 8, seed=0, resolution=8, **ONE))
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as mngr:
    mngr.restore(2, args=ocp.args.Composite(ds=grain.checkpoint.CheckpointRestore(fresh)))
  np.testing.assert_array_equal(next(fresh)["image"], expected["image"])
