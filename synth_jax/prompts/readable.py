"""Dataset label names -> words for prompts; the label (and its id) stays the dataset's own.

  readable("n01440764")            -> "tench"            (ImageNet-1k WordNet id, shipped table)
  readable("n02085620-chihuahua")  -> "chihuahua"        (stanford_dogs)
  readable("/a/apartment_building/outdoor") -> "apartment building outdoor"   (SUN397)
  readable("Faces_easy")           -> "face"             (Caltech-101's odd folder names)
  readable("golden_retriever")     -> "golden retriever"

Why (issue 17, point 6): raw ids reached the LLM and Stable Diffusion ("a good photo of the
n01440764"), so the synthetic set was noise with the right labels. Only the text changes: the
prompts stage keeps each class's `name` (the real dataset's label, which the synthetic dataset
records and the trainer maps to real label ids) and writes the words as `prompt_name`.

The ImageNet-1k table (data/imagenet1k_classes.tsv, WordNet id -> synonyms, in tfds
imagenet2012's label order) was generated offline from timm.data.ImageNetInfo and is shipped:
nothing is downloaded. The first synonym is the name ("tench, Tinca tinca" -> "tench").
"""
from __future__ import annotations

import functools
import os
import re

_WNID = re.compile(r"n\d{8}")
_DOGS = re.compile(r"n\d{8}-(.+)")
_SUN = re.compile(r"/[a-z]/(.+)")
# Caltech-101's folder names that are plural, odd or not an object (tfds lower-cases them).
_CALTECH = {"faces": "face", "faces_easy": "face", "leopards": "leopard", "motorbikes": "motorbike",
            "airplanes": "airplane", "car_side": "car", "background_google": "background",
            "water_lilly": "water lily"}


@functools.lru_cache(maxsize=1)
def imagenet_names() -> dict[str, str]:
  """WordNet id -> its first synonym, for the 1,000 ImageNet-1k classes."""
  path = os.path.join(os.path.dirname(__file__), "data", "imagenet1k_classes.tsv")
  out = {}
  with open(path) as f:
    for line in f:
      if line.startswith("#") or not line.strip():
        continue
      wnid, names = line.rstrip("\n").split("\t", 1)
      out[wnid] = names.split(",")[0].strip()
  return out


def _words(s: str) -> str:
  return " ".join(s.replace("_", " ").replace("-", " ").split())


def readable(name: str) -> str:
  """The words for one class label (see the module docstring); unknown forms: '_' -> ' '."""
  name = str(name)
  if _WNID.fullmatch(name):
    return imagenet_names().get(name, name)
  m = _DOGS.fullmatch(name)
  if m:
    return _words(m.group(1))
  m = _SUN.fullmatch(name)
  if m:
    return _words(m.group(1).replace("/", " "))
  if name.lower() in _CALTECH:
    return _CALTECH[name.lower()]
  return " ".join(name.replace("_", " ").split())
