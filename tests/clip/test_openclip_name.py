"""OpenCLIP checkpoint loaded by architecture name (model_name=), the name registered offline with
open_clip.add_model_config; embeddings vs the model open_clip itself builds from that name."""
import json
import os

import pytest

from synth_jax.errors import ConfigError
from synth_jax.models import clip as clip_lib
from tests.clip import helpers

NAME = "synthjax-tiny-ViT-8"


@pytest.fixture
def registered(tmp_path, monkeypatch):
  """A tiny checkpoint file and its config registered in open_clip under NAME (undone after)."""
  import open_clip
  from open_clip import factory
  # add_model_config rebinds these module globals: restore them so no other test sees NAME.
  monkeypatch.setattr(factory, "_MODEL_CONFIG_PATHS", list(factory._MODEL_CONFIG_PATHS))
  monkeypatch.setattr(factory, "_MODEL_CONFIGS", dict(factory._MODEL_CONFIGS))
  _, weights, config = helpers.openclip_checkpoint(str(tmp_path / "ckpt"))
  os.makedirs(tmp_path / "configs")
  with open(config) as src, open(tmp_path / "configs" / f"{NAME}.json", "w") as dst:
    json.dump(json.load(src), dst)
  open_clip.add_model_config(str(tmp_path / "configs"))
  assert NAME in open_clip.list_models()
  return weights


def test_openclip_by_model_name_matches_open_clip(registered):
  import open_clip
  ref = open_clip.create_model(NAME, pretrained=registered).eval()  # open_clip's own name lookup
  clip = clip_lib.load_clip(registered, model_name=NAME, batch_size=8)
  images = helpers.random_images(5, [(32, 32)] * 2 + [(40, 56)])
  image_diff, text_diff = helpers.openclip_max_diffs(clip, ref, images, helpers.TEXTS)
  print(f"OpenCLIP by model_name: text max-abs {text_diff:.2e}, image max-abs {image_diff:.2e}")
  assert text_diff <= 1e-4 and image_diff <= 1e-4
  with pytest.raises(ConfigError, match=r"no model config 'synthjax-tiny-ViT-9'"):
    clip_lib.load_clip(registered, model_name="synthjax-tiny-ViT-9")
