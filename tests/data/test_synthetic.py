"""The synthetic dataset's labels land in the real label space by class name."""
import numpy as np
import pytest

from synth_jax.data import pipeline, synthetic, writer as writer_lib
from synth_jax.errors import DataError

REAL = ["cat", "dog", "sea turtle"]


def _synthetic(tmp_path, names, name="syn"):
  """One image per synthetic class, its pixel value = 40 * (real index + 1)."""
  feats = writer_lib.image_features(names, extras={"class_name": "text", "prompt": "text",
                                                   "seed": "int64"})
  w = writer_lib.DatasetWriter(str(tmp_path), name, feats)
  exs = [{"image": np.full((8, 8, 3), 40 * (REAL.index(n.replace("_", " ").lower()) + 1)
                           if n.replace("_", " ").lower() in REAL else 7, np.uint8),
          "label": i, "class_name": n, "prompt": f"a photo of a {n}", "seed": i}
         for i, n in enumerate(names)]
  w.write_shard("train", 0, 1, exs)
  return w.finalize(["train"])


def test_labels_follow_names_not_order(tmp_path):
  stream = synthetic.open_synthetic(_synthetic(tmp_path, ["Sea_Turtle", "cat", "dog"]), REAL)
  np.testing.assert_array_equal(stream.label_map, [2, 0, 1])
  assert stream.domain == 1
  ev = next(iter(pipeline.make_eval_dataset(stream, 3, resolution=8,
                                            augment={"crop_pct": 1.0}, process_index=0,
                                            process_count=1)))
  pixel = ev["image"][:, 0, 0, 0] * 0.229 * 255 + 0.485 * 255
  np.testing.assert_allclose(pixel, 40 * (ev["label"] + 1), atol=1)  # label matches its image


def test_mismatch_lists_the_classes(tmp_path):
  d = _synthetic(tmp_path, ["cat", "zebra"], name="bad")
  with pytest.raises(DataError, match=r"\['zebra'\].*'dog', 'sea turtle'"):
    synthetic.open_synthetic(d, REAL)
  stream = synthetic.open_synthetic(d, REAL, rename={"zebra": "dog"})
  np.testing.assert_array_equal(stream.label_map, [0, 1])
  with pytest.raises(DataError, match="no images for real classes"):
    synthetic.open_synthetic(d, REAL, rename={"zebra": "dog"}, require_all=True)
