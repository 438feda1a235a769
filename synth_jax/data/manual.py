"""Builders that read a user's manually downloaded files (tfds has none, or its download is dead).

  splits, names = PARSERS["cars"](manual_dir)   # {split: [(path, label)]}, class names
  dataset_dir = prepare("cars", manual_dir, data_dir)   # -> <data_dir>/cars/1.0.0 via our writer

Layouts read (the archives as their owners distribute them, unpacked anywhere under manual_dir;
the parsers search for the files by name, so an extra top folder, as in Kaggle mirrors, is fine):
- cars (Stanford Cars, 196 classes): `devkit/cars_meta.mat`, `devkit/cars_train_annos.mat`,
  `cars_test_annos_withlabels.mat`, `cars_train/*.jpg`, `cars_test/*.jpg`. Splits train (8,144) /
  test (8,041), the standard ones (also torchvision's `StanfordCars`).
- aircraft (FGVC-Aircraft 2013b, 100 variants): `fgvc-aircraft-2013b/data/{variants.txt,
  images_variant_{train,val,trainval,test}.txt, images/*.jpg}`. Splits train, validation,
  trainval (6,667) and test (3,333), as torchvision's `FGVCAircraft`.
- pets (Oxford-IIIT Pet, 37 breeds): `images/*.jpg`, `annotations/{trainval,test}.txt`. Splits
  train (= trainval, 3,680) / test (3,669); names as torchvision's `OxfordIIITPet`.
Labels and class names match torchvision's readers of the same files (tested on fake copies).
"""
from __future__ import annotations

import os
from typing import Callable

from synth_jax.errors import DataError


def _find(root: str, name: str, want_dir: bool = False) -> str:
  """The shallowest path under root named `name` (file or dir); DataError if none."""
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise DataError(f"manual_dir {root!r} does not exist; download the dataset's archives and "
                    "unpack them there")
  best = None
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    pool = dirnames if want_dir else filenames
    if name in pool:
      path = os.path.join(dirpath, name)
      if best is None or path.count(os.sep) < best.count(os.sep):
        best = path
  if best is None:
    raise DataError(f"{name!r} not found under manual_dir {root!r}; unpack the dataset's "
                    "original archives there (see synth_jax/data/manual.py for the layout)")
  return best


def _image_dir(root: str, name: str, first_file: str) -> str:
  """Dir `name` holding `first_file`, looking one level down too (cars_train/cars_train/...)."""
  d = _find(root, name, want_dir=True)
  for candidate in (d, os.path.join(d, name)):
    if os.path.isfile(os.path.join(candidate, first_file)):
      return candidate
  raise DataError(f"{first_file!r} is not in {d!r}; unpack the image archive {name}.tgz fully")


def parse_cars(manual_dir: str):
  import scipy.io as sio
  meta = sio.loadmat(_find(manual_dir, "cars_meta.mat"), squeeze_me=True)
  names = [str(n) for n in meta["class_names"].tolist()]
  splits = {}
  for split, annos, images in (("train", "cars_train_annos.mat", "cars_train"),
                               ("test", "cars_test_annos_withlabels.mat", "cars_test")):
    rows = sio.loadmat(_find(manual_dir, annos), squeeze_me=True)["annotations"]
    rows = [rows] if rows.ndim == 0 else list(rows)
    folder = _image_dir(manual_dir, images, str(rows[0]["fname"]))
    splits[split] = [(os.path.join(folder, str(r["fname"])), int(r["class"]) - 1) for r in rows]
  return splits, names


def parse_aircraft(manual_dir: str, annotation: str = "variant"):
  files = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
  if annotation not in files:
    raise DataError(f"aircraft annotation {annotation!r} is unknown; use one of {sorted(files)}")
  names_path = _find(manual_dir, files[annotation])
  data = os.path.dirname(names_path)
  with open(names_path) as f:
    names = [line.strip() for line in f if line.strip()]
  ids = {n: i for i, n in enumerate(names)}
  splits = {}
  for split, tag in (("train", "train"), ("validation", "val"), ("trainval", "trainval"),
                     ("test", "test")):
    path = os.path.join(data, f"images_{annotation}_{tag}.txt")
    if not os.path.isfile(path):
      continue
    with open(path) as f:
      rows = [line.strip().split(" ", 1) for line in f if line.strip()]
    splits[split] = [(os.path.join(data, "images", f"{img}.jpg"), ids[label]) for img, label in rows]
  if "trainval" not in splits or "test" not in splits:
    raise DataError(f"{data!r} lacks images_{annotation}_trainval.txt / _test.txt; unpack "
                    "fgvc-aircraft-2013b.tar.gz fully")
  return splits, names


def parse_pets(manual_dir: str):
  anns = os.path.dirname(_find(manual_dir, "trainval.txt"))
  images = os.path.join(os.path.dirname(anns), "images")
  splits, pairs = {}, {}
  for split, tag in (("train", "trainval"), ("test", "test")):
    with open(os.path.join(anns, f"{tag}.txt")) as f:
      rows = [line.split() for line in f if line.strip() and not line.startswith("#")]
    splits[split] = [(os.path.join(images, f"{r[0]}.jpg"), int(r[1]) - 1) for r in rows]
    if split == "train":  # names from the breed part of the file names, as torchvision does
      pairs = {int(r[1]) - 1: r[0].rsplit("_", 1)[0] for r in rows}
  names = [" ".join(p.title() for p in pairs[i].split("_")) for i in sorted(pairs)]
  return splits, names


PARSERS: dict[str, Callable] = {"cars": parse_cars, "aircraft": parse_aircraft, "pets": parse_pets}


def prepare(name: str, manual_dir: str, data_dir: str, encoding: str = "jpeg",
            shard_size: int = 1000, resize_shorter: int = 0) -> str:
  """Parses `manual_dir` and writes <data_dir>/<name>/1.0.0 (resumable); returns that dir."""
  from synth_jax.data import folder
  if name not in PARSERS:
    raise DataError(f"no manual builder for {name!r}; manual builders: {sorted(PARSERS)}")
  done = os.path.join(data_dir, name, "1.0.0", "dataset_info.json")
  if os.path.isfile(done):
    return os.path.dirname(done)
  splits, names = PARSERS[name](manual_dir)
  missing = [p for items in splits.values() for p, _ in items[:1] if not os.path.isfile(p)]
  if missing:
    raise DataError(f"image {missing[0]!r} listed in the annotations is missing; unpack every "
                    f"image archive of {name} under {manual_dir!r}")
  report = folder.import_images(splits, names, data_dir, name, encoding=encoding,
                                shard_size=shard_size, resize_shorter=resize_shorter)
  return report.dataset_dir
