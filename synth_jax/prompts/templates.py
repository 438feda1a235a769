"""Prompt text: template families, dataset suffixes, default styles, and the CD/SD/DSI wordings.

  template_prompts("boeing 747", family="simple", dataset="aircraft")
    -> ["a photo of a boeing 747, a type of aircraft."]
  dsi_prompt("boeing 747", "<dataset-style>") -> "a boeing 747 photo in the style of <dataset-style>"

Sourced wordings (facts.md 1.3): Li et al.'s single template "A good photo of the {class}" (family
"li") and their DSI prompt "A {C_i} photo in the style of S*". Everything else here is OURS: the
dataset suffixes follow CLIP's zero-shot templates ("a photo of a {}, a type of aircraft."), and
Yu et al.'s style list is NOT FOUND (facts.md 2.3), so DEFAULT_STYLES is our list, chosen to cover
the renditions of ImageNet-R/-Sketch that the paper evaluates on.
"""
from __future__ import annotations

from typing import Sequence

from synth_jax.errors import ConfigError

# Families of class-agnostic templates; "{}" is the class name (already disambiguated).
FAMILIES = {
    "simple": ("a photo of a {}.",),
    "li": ("a good photo of the {}.",),  # Li et al.'s single template (facts.md 1.3)
    "clip": ("a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.",
             "a photo of the small {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
             "a cropped photo of the {}.", "a good photo of a {}."),
}

# Dataset-specific wordings (CLIP's zero-shot templates). They replace the family's "a photo of a
# {}." by a phrase that says what kind of thing the class is: this matters for fine-grained names
# ("707-320" alone is not an aircraft to a text encoder).
DATASET_TEMPLATES = {
    "aircraft": "a photo of a {}, a type of aircraft.",
    "cars": "a photo of a {}, a type of car.",
    "pets": "a photo of a {}, a type of pet.",
    "dogs": "a photo of a {}, a type of dog.",
    "flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "dtd": "a photo of a {} texture.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "cifar10": "a photo of a {}.",
    "cifar100": "a photo of a {}.",
    "imagenet": "a photo of a {}.",
    "digits": "a photo of the handwritten digit {}.",
}
# The same kind-words, to tell the LLM what domain a class name lives in.
DOMAINS = {"aircraft": "aircraft models", "cars": "car models", "pets": "pet breeds",
           "dogs": "dog breeds", "flowers": "flowers", "food101": "dishes and food",
           "dtd": "textures", "sun397": "scenes and places", "digits": "handwritten digits"}

# OURS (Yu et al.'s list is NOT FOUND): renditions a classifier should be robust to.
DEFAULT_STYLES = (
    "a photo", "a sketch", "a pencil drawing", "an oil painting", "a watercolor painting",
    "a cartoon", "a 3D rendering", "a black and white photo", "an embroidery", "a sculpture",
    "pixel art", "an origami", "a tattoo", "a plastic toy", "a graffiti", "a video game render",
)

CD_TEMPLATE = "a photo of a {name}, {context}"   # OURS: the class, then the LLM's scene
SD_TEMPLATE = "{style} of a {name}"              # OURS: "a watercolor painting of a tabby cat"
DSI_TEMPLATE = "a {name} photo in the style of {token}"  # Li et al. (facts.md 1.3)


def readable(name: str) -> str:
  """A class label as words: "golden_retriever" -> "golden retriever", "n01440764" -> "tench",
  "n02085620-chihuahua" -> "chihuahua", "/a/abbey" -> "abbey" (synth_jax.prompts.readable)."""
  from synth_jax.prompts import readable as readable_lib
  return readable_lib.readable(name)


def _check(template: str, fields: Sequence[str], what: str, example: str) -> None:
  missing = ["{" + f + "}" for f in fields if "{" + f + "}" not in template]
  if missing:
    raise ConfigError(f"{what}={template!r} lacks {', '.join(missing)}; e.g. {example!r}")


def family_templates(family: str, dataset: str = "") -> list[str]:
  """The templates of `family`; with a known `dataset`, "a photo of a {}." gets its suffix."""
  if family not in FAMILIES:
    raise ConfigError(f"template family {family!r} is unknown; use one of {sorted(FAMILIES)}")
  special = DATASET_TEMPLATES.get(dataset)
  out = []
  for t in FAMILIES[family]:
    out.append(special if special and t == "a photo of a {}." else t)
  return out


def template_prompts(name: str, family: str = "simple", dataset: str = "",
                     extra: Sequence[str] = ()) -> list[str]:
  """Template prompts for one (readable, disambiguated) class name; `extra` are user templates."""
  templates = family_templates(family, dataset) + [t for t in extra]
  bad = [t for t in templates if "{}" not in t]
  if bad:
    raise ConfigError(f"template {bad[0]!r} has no '{{}}' for the class name; "
                      "e.g. 'a photo of a {}.'")
  return list(dict.fromkeys(t.format(name) for t in templates))  # ordered, no duplicates


def cd_prompt(name: str, context: str, template: str = CD_TEMPLATE) -> str:
  _check(template, ("name", "context"), "cd_template", CD_TEMPLATE)
  return template.format(name=name, context=context.rstrip(". "))


def sd_prompt(name: str, style: str, template: str = SD_TEMPLATE) -> str:
  _check(template, ("name", "style"), "sd_template", SD_TEMPLATE)
  return template.format(name=name, style=style)


def dsi_prompt(name: str, token: str, template: str = DSI_TEMPLATE) -> str:
  _check(template, ("name", "token"), "dsi_template", DSI_TEMPLATE)
  if not token:
    raise ConfigError("dsi.token is empty; pass the token `synth-jax invert` learned, e.g. "
                      "--config.dsi.token='<dataset-style>'")
  return template.format(name=name, token=token)
