"""Templates, list parsing, and the deterministic per-image prompt draw."""
import collections

import pytest

from synth_jax.errors import ConfigError
from synth_jax.prompts import diversify, llm, templates


def test_dataset_suffix_and_families():
  assert templates.template_prompts("boeing 747", "simple", "aircraft") == [
      "a photo of a boeing 747, a type of aircraft."]
  assert templates.template_prompts("tabby cat", "li") == ["a good photo of the tabby cat."]
  clip = templates.template_prompts("rose", "clip", "flowers")
  assert clip[0] == "a photo of a rose, a type of flower." and len(clip) == 8
  assert templates.dsi_prompt("boeing 747", "<dsi>") == "a boeing 747 photo in the style of <dsi>"
  with pytest.raises(ConfigError, match="family 'nope'"):
    templates.template_prompts("x", "nope")
  with pytest.raises(ConfigError, match=r"lacks \{context\}"):
    templates.cd_prompt("x", "y", "a photo of {name}")


@pytest.mark.parametrize("text,want", [
    ('Sure! Here you go:\n["on a beach", "in the snow"]\nEnjoy.', ["on a beach", "in the snow"]),
    ("Here are scenes:\n1. on a beach\n2) in the snow\n- at night\n", ["on a beach", "in the snow",
                                                                        "at night"]),
    ("on a beach\nOn a beach\n\n  in the snow  ", ["on a beach", "in the snow"]),
    ("", []),
    ("!!!! ???\n12345", []),
])
def test_parse_list(text, want):
  assert llm.parse_list(text) == want


def _entry():
  prompts = ([{"text": f"t{i}", "kind": "template"} for i in range(2)] +
             [{"text": f"c{i}", "kind": "cd"} for i in range(8)] +
             [{"text": f"s{i}", "kind": "sd"} for i in range(4)])
  return {"id": 3, "name": "cat", "prompts": prompts}


def test_pick_prompt_is_deterministic_and_weighted_by_kind():
  e = _entry()
  draws = [diversify.pick_prompt(e, 7, 3, i, {"template": 1, "cd": 1, "sd": 2})["text"]
           for i in range(3000)]
  again = [diversify.pick_prompt(e, 7, 3, i, {"template": 1, "cd": 1, "sd": 2})["text"]
           for i in range(3000)]
  assert draws == again
  assert draws != [diversify.pick_prompt(e, 8, 3, i, {"template": 1, "cd": 1, "sd": 2})["text"]
                   for i in range(3000)]
  kinds = collections.Counter(d[0] for d in draws)
  # Kind frequencies follow the weights (1:1:2), not the number of prompts per kind (2:8:4).
  assert abs(kinds["s"] / 3000 - 0.5) < 0.04 and abs(kinds["t"] / 3000 - 0.25) < 0.04
  assert set(draws) == {p["text"] for p in e["prompts"]}
  only_cd = {diversify.pick_prompt(e, 0, 3, i, {"cd": 1.0})["kind"] for i in range(200)}
  assert only_cd == {"cd"}
  with pytest.raises(ConfigError, match="no positive weight"):
    diversify.pick_prompt(e, 0, 3, 0, {"dsi": 1.0})


def test_pick_prompt_matches_the_generate_job():
  from synth_jax.diffusion import generate
  e = _entry()
  for w in ({}, {"template": 1, "cd": 3}, {"sd": 1.0, "cd": 0.5, "dsi": 2}):
    ours = [diversify.pick_prompt(e, 5, 3, i, w) for i in range(300)]
    theirs = [generate.pick_prompt(e["prompts"], w, 5, 3, i) for i in range(300)]
    assert ours == theirs
