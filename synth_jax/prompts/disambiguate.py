"""Class-name disambiguation (Yu et al.): the LLM proposes meanings, CLIP picks the one the images show.

  prompt = meanings_prompt("crane", domain="birds", n=4)   # -> LLM -> candidate descriptions
  result = choose(clip, ["crane, a wading bird", "crane, a lifting machine"], images)
  result["chosen"], result["scores"]

CLIP is any object with `embed_text(list[str]) -> (N, D)` and `embed_images(uint8 images) ->
(N, D)`, both L2-normalized (synth_jax.models.clip.CLIP). The score of a candidate is the cosine
between its text embedding (through `template`) and the normalized mean embedding of the class's
real images. Yu et al.'s exact scoring rule, prompt and CLIP are NOT FOUND (facts.md 2.3): this
rule (mean image embedding, one text template) is ours.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from synth_jax.errors import DataError

DEFAULT_TEMPLATE = "a photo of a {}."


def meanings_prompt(name: str, *, domain: str = "", n: int = 4) -> str:
  """The instruction that asks the LLM for the possible meanings of a class name."""
  where = f" in a dataset of {domain}" if domain else " in an image classification dataset"
  return (f'The class name "{name}" is used{where}. List up to {n} different things this name can '
          f"refer to. Write each as the name followed by a few words saying which meaning, e.g. "
          f'"{name}, a ...". One per line, no numbering, nothing else.')


def choose(clip, candidates: Sequence[str], images, *, template: str = DEFAULT_TEMPLATE,
           class_name: str = "") -> dict:
  """{"candidates", "scores", "chosen", "index", "images"}: the best-matching candidate."""
  candidates = list(candidates)
  if not candidates:
    raise DataError(f"class {class_name!r}: no candidate meanings to choose from")
  if len(images) == 0:
    raise DataError(f"class {class_name!r} has no real images to disambiguate with; give it "
                    "images or set --config.disambiguate.enabled=False")
  img = np.asarray(clip.embed_images(images), np.float64)
  center = img.mean(0)
  center /= max(np.linalg.norm(center), 1e-12)
  txt = np.asarray(clip.embed_text([template.format(c) for c in candidates]), np.float64)
  scores = txt @ center
  # Scores are rounded so the artifact is byte-stable across BLAS builds; ties -> first candidate.
  rounded = [round(float(s), 6) for s in scores]
  index = int(np.argmax(rounded))
  return {"candidates": candidates, "scores": rounded, "index": index,
          "chosen": candidates[index], "images": int(len(images))}
