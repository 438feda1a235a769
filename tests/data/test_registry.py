"""Manual builders on tiny fake copies of the real downloads, checked against torchvision's readers."""
import os

import numpy as np
import pytest
from PIL import Image

from synth_jax.data import manual, registry
from synth_jax.errors import DataError


def _jpg(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new("RGB", (12, 10), (value, value, value)).save(path, quality=95)


def _fake_cars(root):
  """Stanford Cars as distributed: devkit .mat files + cars_train/ cars_test/ (Kaggle-style nesting)."""
  import scipy.io as sio
  base = root / "stanford_cars"
  names = np.array(["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012", "Audi R8 2012"],
                   dtype=object)
  os.makedirs(base / "devkit")
  sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
  dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"),
        ("fname", "O")]
  for split, labels, mat in (("train", [1, 2, 3, 3], base / "devkit" / "cars_train_annos.mat"),
                             ("test", [2, 1, 3], base / "cars_test_annos_withlabels.mat")):
    rows = np.zeros((1, len(labels)), dtype=dt)
    for i, c in enumerate(labels):
      fname = f"{i + 1:05d}.jpg"
      rows[0, i] = (np.array([[1]]), np.array([[1]]), np.array([[9]]), np.array([[8]]),
                    np.array([[c]], np.uint8), np.array([fname]))
      _jpg(str(base / f"cars_{split}" / fname), 40 * c)
    sio.savemat(mat, {"annotations": rows})
  return root


def _fake_aircraft(root):
  data = root / "fgvc-aircraft-2013b" / "data"
  os.makedirs(data / "images")
  (data / "variants.txt").write_text("707-320\nA300B4\nF/A-18\n")
  splits = {"train": [("0001", "707-320"), ("0002", "F/A-18")], "val": [("0003", "A300B4")],
            "test": [("0004", "F/A-18"), ("0005", "707-320")]}
  splits["trainval"] = splits["train"] + splits["val"]
  for tag, rows in splits.items():
    (data / f"images_variant_{tag}.txt").write_text("".join(f"{i} {v}\n" for i, v in rows))
    for i, _ in rows:
      _jpg(str(data / "images" / f"{i}.jpg"), int(i) * 30)
  return root


def _fake_pets(root):
  base = root / "oxford-iiit-pet"
  os.makedirs(base / "annotations")
  # Rows are "image class_id species breed_id"; the third breed's species (2, dog) differs from
  # its class id (3), so reading the wrong column shows.
  rows = {"trainval": [("Abyssinian_1", 1, 1), ("american_bulldog_10", 2, 2),
                       ("american_pit_bull_terrier_4", 3, 2), ("Abyssinian_2", 1, 1)],
          "test": [("american_bulldog_3", 2, 2), ("american_pit_bull_terrier_8", 3, 2),
                   ("Abyssinian_5", 1, 1)]}
  for tag, rs in rows.items():
    (base / "annotations" / f"{tag}.txt").write_text(
        "".join(f"{n} {c} {s} 1\n" for n, c, s in rs))
    for n, c, _ in rs:
      _jpg(str(base / "images" / f"{n}.jpg"), 50 * c)
  return root


def _samples(tv_dataset):
  files = getattr(tv_dataset, "_image_files", None) or getattr(tv_dataset, "_images", None)
  if files is None:
    return [(p, l) for p, l in tv_dataset._samples]
  return list(zip(map(str, files), getattr(tv_dataset, "_labels")))


@pytest.mark.parametrize("name,splits", [("cars", {"train": "train", "test": "test"}),
                                         ("aircraft", {"trainval": "trainval", "test": "test",
                                                       "train": "train", "validation": "val"}),
                                         ("pets", {"train": "trainval", "test": "test"})])
def test_parsers_match_torchvision(tmp_path, name, splits):
  from torchvision import datasets
  maker = {"cars": _fake_cars, "aircraft": _fake_aircraft, "pets": _fake_pets}[name]
  root = maker(tmp_path)
  ours, names = manual.PARSERS[name](str(tmp_path))
  for split, tv_split in splits.items():
    if name == "cars":
      tv = datasets.StanfordCars(str(root), split=tv_split)
    elif name == "aircraft":
      tv = datasets.FGVCAircraft(str(root), split=tv_split)
    else:
      tv = datasets.OxfordIIITPet(str(root), split=tv_split)
    assert [(os.path.realpath(p), l) for p, l in ours[split]] == \
        [(os.path.realpath(p), int(l)) for p, l in _samples(tv)]
    assert names == list(tv.classes)


def test_cars_prepare_and_load_through_registry(tmp_path):
  _fake_cars(tmp_path / "dl")
  train = registry.load("cars", "train", data_dir=str(tmp_path / "tfds"),
                        manual_dir=str(tmp_path / "dl"))
  test = registry.load("cars", registry.get("cars").eval_split, data_dir=str(tmp_path / "tfds"),
                       manual_dir=str(tmp_path / "dl"))
  assert len(train) == 4 and len(test) == 3
  assert train.class_names[1] == "Ram C/V Cargo Van Minivan 2012"
  np.testing.assert_array_equal(train.labels(), [0, 1, 2, 2])
  np.testing.assert_array_equal(test.labels(), [1, 0, 2])
  from synth_jax.data import augment
  pixel = augment.decode(test.source[0]["image"]).getpixel((5, 5))[0]
  assert abs(pixel - 80) <= 2  # test image 1 is class 2 -> value 80


@pytest.mark.parametrize("name,tv_splits", [
    ("aircraft", {"trainval": "trainval", "test": "test", "train": "train", "validation": "val"}),
    ("pets", {"train": "trainval", "test": "test"})])
def test_manual_prepare_and_load_through_registry_match_torchvision(tmp_path, name, tv_splits):
  """registry.load(manual_dir=) on a fake download: every split's records (file bytes, label) and
  class names equal torchvision's reader of the same files, in the same order."""
  from torchvision import datasets
  maker, reader = {"aircraft": (_fake_aircraft, datasets.FGVCAircraft),
                   "pets": (_fake_pets, datasets.OxfordIIITPet)}[name]
  root = maker(tmp_path / "dl")
  spec = registry.get(name)
  assert spec.train_split in tv_splits and spec.eval_split in tv_splits
  for split, tv_split in tv_splits.items():
    ours = registry.load(name, split, data_dir=str(tmp_path / "tfds"), manual_dir=str(root))
    tv = reader(str(root), split=tv_split)
    want = [(p, int(l)) for p, l in _samples(tv)]
    assert len(ours) == len(want) and ours.class_names == list(tv.classes)
    np.testing.assert_array_equal(ours.labels(), [l for _, l in want])
    for i, (path, _) in enumerate(want):
      record = ours.source[i]
      assert record["filename"].decode() == os.path.basename(path)
      with open(path, "rb") as f:
        assert record["image"] == f.read()  # RGB JPEGs are stored byte for byte
  assert len(ours.class_names) == {"aircraft": 3, "pets": 3}[name]


def test_registry_names_and_errors(tmp_path):
  paper = ["aircraft", "caltech101", "cars", "dtd", "dogs", "flowers", "food101", "pets", "sun397"]
  assert all(registry.get(n).num_classes > 1 for n in paper + ["cifar10", "cifar100", "imagenet"])
  assert registry.get("cars").tfds_name is None and registry.get("aircraft").manual
  digits = registry.load("digits", "test", data_dir=str(tmp_path / "d"))
  assert len(digits.class_names) == 10 and len(digits) == 359
  with pytest.raises(DataError, match="did you mean cars"):
    registry.get("carz")
  with pytest.raises(DataError, match="manual_dir"):
    registry.load("aircraft", data_dir=str(tmp_path))
  with pytest.raises(DataError, match="cars_meta.mat"):
    registry.load("cars", data_dir=str(tmp_path), manual_dir=str(tmp_path))


def test_tfds_builders_through_registry_and_pipeline(tmp_path):
  import tensorflow_datasets as tfds
  from synth_jax.data import pipeline
  with tfds.testing.mock_data(num_examples=6):
    split = registry.load("dtd", registry.get("dtd").train_split, data_dir=str(tmp_path))
    assert len(split.class_names) == registry.get("dtd").num_classes == 47
    batch = next(iter(pipeline.make_train_dataset(split, 4, seed=0, resolution=8,
                                                  process_index=0, process_count=1)))
  assert batch["image"].shape == (4, 8, 8, 3) and (batch["label"] < 47).all()
