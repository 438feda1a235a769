"""Issue 17 point 5: one DSI token name; unused or unknown tokens stop generate before sampling."""
import os

import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax.diffusion import textual_inversion, tiny, token_check
from synth_jax.errors import ConfigError

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def test_prompts_and_invert_default_to_one_token_name():
  p = config_lib.load_config(os.path.join(CONFIGS, "prompts", "base.py"))
  i = config_lib.load_config(os.path.join(CONFIGS, "invert", "base.py"))
  assert p.dsi.token == i.token == "<dataset-style>"


@pytest.fixture
def tokenizer(tmp_path):
  import transformers
  d = str(tmp_path / "tok")
  tiny.write_tiny_tokenizer(d)
  return transformers.CLIPTokenizer.from_pretrained(d)


def test_unknown_and_unused_tokens(tokenizer):
  prompts = ["a cat photo in the style of <dsi>"]
  with pytest.raises(ConfigError, match=r"uses '<dsi>', which the tokenizer does not know") as e:
    token_check.check_prompt_tokens(prompts, tokenizer, [])
  assert "\n" not in str(e.value)
  tokenizer.add_tokens(["<dataset-style>", "<dataset-style>_1"])
  with pytest.raises(ConfigError, match=r"'<dataset-style>' was loaded but no prompt uses it"):
    token_check.check_prompt_tokens(["a cat photo"], tokenizer, ["<dataset-style>",
                                                                 "<dataset-style>_1"])
  token_check.check_prompt_tokens(["a cat photo in the style of <dataset-style>"], tokenizer,
                                  ["<dataset-style>", "<dataset-style>_1"])  # multi-vector: fine


def test_generate_stops_before_the_first_image(tmp_path, tokenizer):
  from synth_jax.diffusion import generate
  emb = tmp_path / "learned_embeds.safetensors"
  textual_inversion.save_learned_embeds(str(emb), {"<dataset-style>": np.zeros((1, 8), np.float32)})
  g = config_lib.load_config(os.path.join(CONFIGS, "generate", "base.py"),
                             ["class_names=cat,dog", f"workdir={tmp_path / 'g'}", "images_per_class=1",
                              f"style_token_path={emb}"])
  tokenizer.add_tokens(["<dataset-style>"])
  calls = []

  class Fake:
    pipe = type("P", (), {"tokenizer": tokenizer})()

    def __call__(self, *a, **k):
      calls.append(1)
      raise AssertionError("sampled")
  with pytest.raises(ConfigError, match="was loaded but no prompt uses it"):
    generate.generate(g, sampler_factory=lambda cfg: Fake())
  assert not calls
