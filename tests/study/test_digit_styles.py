"""The study's data (issue 19, point 1): pools disjoint by sample index, deterministic, and the
target style absent from the generator's data (neither in a caption nor in the pixels)."""
import numpy as np
import pytest

from synth_jax.data import digit_styles as ds
from synth_jax.data import digits as digits_lib
from synth_jax.data import sources


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  return ds.build_study_data(str(tmp_path_factory.mktemp("study")), renderings=2)


def test_pools_are_disjoint_cover_everything_and_test_is_the_digits_test_split():
  from sklearn.datasets import load_digits
  p = ds.pools()
  a, b, c = (set(p[k].tolist()) for k in ("test", "target", "source"))
  assert not (a & b) and not (a & c) and not (b & c)
  assert len(a | b | c) == len(load_digits().target) == 1797
  # The test pool is the very split the plain digits dataset holds out (same stream, same seed).
  d = digits_lib.digits_arrays()
  assert len(p["test"]) == len(d["test"][1])
  np.testing.assert_array_equal(np.bincount(load_digits().target[p["test"]]), np.bincount(d["test"][1]))
  # Every class is in every pool (few-shot k=10 needs >= 10 target images per class).
  labels = load_digits().target
  for k in p:
    assert np.bincount(labels[p[k]], minlength=10).min() >= 10, k


def test_written_datasets_keep_the_pools_apart(written):
  src = sources.open_split(written["source"], "train")
  idx = {split: {int(src_ex["index"]) for src_ex in _iter(sources.open_split(written["target"], split))}
         for split in ("train", "test")}
  src_idx = {int(ex["index"]) for ex in _iter(src)}
  assert not (src_idx & idx["test"]) and not (src_idx & idx["train"]) and not (idx["train"] & idx["test"])
  p = ds.pools()
  assert src_idx == set(p["source"].tolist()) and idx["test"] == set(p["test"].tolist())
  assert len(src) == 2 * len(p["source"])  # renderings=2


def test_target_style_absent_from_generator_data():
  a = ds.study_arrays(renderings=2)
  src = a["source"]
  assert set(src["style"].tolist()) <= set(ds.NAMED_STYLES) and "pencil" not in set(src["style"].tolist())
  assert not any("pencil" in p or "paper" in p for p in src["prompt"].tolist())
  # Pixels: every source image has a black background (a quarter or more of it near black), no
  # target image has a single near-black pixel (grey pencil on light paper).
  black = lambda im: (im.reshape(len(im), -1) < 40).mean(1)  # noqa: E731
  assert black(src["image"]).min() > 0.25
  assert black(a["target_train"]["image"]).max() == 0 and black(a["target_test"]["image"]).max() == 0
  # Captions name the rendering they show (or no style at all).
  for p, s in zip(src["prompt"].tolist(), src["style"].tolist()):
    assert p.startswith("a digit ") or f" {s} digit " in p, (p, s)
  with pytest.raises(Exception, match="captions never name"):
    ds.study_arrays(target_style="thick")


def test_deterministic():
  a, b = ds.study_arrays(renderings=1), ds.study_arrays(renderings=1)
  for part in a:
    for k in a[part]:
      np.testing.assert_array_equal(a[part][k], b[part][k])
  c = ds.study_arrays(renderings=1, seed=1)
  assert not np.array_equal(a["source"]["index"], c["source"]["index"])


def _iter(split):
  return (split.source[i] for i in range(len(split)))


def test_caption_dataset_labels_each_image_by_its_own_caption(tmp_path):
  d = ds.build_caption_dataset(str(tmp_path), renderings=1)
  split = sources.open_split(d, "train")
  assert split.class_names == ds.all_captions() and len(set(split.class_names)) == 150
  want = ds.study_arrays(renderings=1)["source"]
  by_index = {int(i): (p, int(c)) for i, p, c in zip(want["index"], want["prompt"], want["label"])}
  assert len(split) == len(by_index)
  for ex in _iter(split):
    prompt, digit = by_index[int(ex["index"])]
    assert split.class_names[int(ex["label"])] == prompt and int(ex["digit"]) == digit
    assert prompt.split(",")[0].endswith(digits_lib.CLASS_NAMES[digit])
