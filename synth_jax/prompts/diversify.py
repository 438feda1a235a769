"""A class's prompt list (template / cd / sd / dsi) and the deterministic per-image draw from it.

  prompts = class_prompts(name, strategies, contexts=[...], styles=DEFAULT_STYLES, token="<dataset-style>")
  p = pick_prompt(entry, seed, class_id, index, weights={"cd": 1, "sd": 1})   # {"text", "kind", ...}

Contextualized (CD) and stylized (SD) diversification follow Yu et al.; their exact procedure is
NOT FOUND (facts.md 2.3), so the mix is ours: the LLM writes K scenes per class (CD), a style list
renders the class in each style (SD), and generation draws a kind by its weight, then a prompt of
that kind uniformly, from (seed, class, index) alone.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from synth_jax import streams
from synth_jax.errors import ConfigError
from synth_jax.prompts import templates

KINDS = ("template", "cd", "sd", "dsi")


def contexts_prompt(name: str, *, domain: str = "", n: int = 8) -> str:
  """The instruction that asks the LLM for K scenes a photo of `name` could be taken in."""
  what = f" (one of {domain})" if domain else ""
  return (f'Write {n} short, varied descriptions of scenes in which a photo of a "{name}"{what} '
          "could be taken: where it is, what is around it, the lighting or the weather. Each is a "
          "phrase of at most 12 words that does not repeat the name. One per line, no numbering.")


def styles_prompt(name: str, *, n: int = 8) -> str:
  """The instruction that asks the LLM for K visual styles to render `name` in (SD from an LLM)."""
  return (f'List {n} different visual styles in which an image of a "{name}" could be made, each '
          'as a short noun phrase that fits "<style> of a ...", e.g. "a watercolor painting", '
          '"a pencil sketch". One per line, no numbering.')


def class_prompts(name: str, strategies: Sequence[str], *, dataset: str = "",
                  family: str = "simple", extra_templates: Sequence[str] = (),
                  contexts: Sequence[str] = (), styles: Sequence[str] = (), token: str = "",
                  cd_template: str = templates.CD_TEMPLATE,
                  sd_template: str = templates.SD_TEMPLATE,
                  dsi_template: str = templates.DSI_TEMPLATE) -> list[dict]:
  """[{"text", "kind", "source"}] for one class in the order template, cd, sd, dsi."""
  out = []
  if "template" in strategies:
    out += [{"text": t, "kind": "template", "source": f"template:{family}"}
            for t in templates.template_prompts(name, family, dataset, extra_templates)]
  if "cd" in strategies:
    out += [{"text": templates.cd_prompt(name, c, cd_template), "kind": "cd",
             "source": f"llm:contexts[{i}]"} for i, c in enumerate(contexts)]
  if "sd" in strategies:
    out += [{"text": templates.sd_prompt(name, s, sd_template), "kind": "sd",
             "source": f"style:{s}"} for s in styles]
  if "dsi" in strategies:
    out.append({"text": templates.dsi_prompt(name, token, dsi_template), "kind": "dsi",
                "source": f"dsi:{token}"})
  return out


def check_strategies(strategies: Sequence[str]) -> list[str]:
  bad = [s for s in strategies if s not in KINDS]
  if bad or not strategies:
    raise ConfigError(f"strategies={list(strategies)} must be a non-empty subset of {list(KINDS)}; "
                      "e.g. --config.strategies=template,cd,sd")
  return list(dict.fromkeys(strategies))


def kind_weights(prompts: Sequence[Mapping], weights: Mapping[str, float] | None,
                 class_name: str = "") -> dict[str, float]:
  """{kind: weight} over the kinds present; {} or None weights every present kind 1."""
  present = list(dict.fromkeys(p.get("kind", "template") for p in prompts))
  if not present:
    raise ConfigError(f"class {class_name!r} has no prompts; rerun `synth-jax prompts`")
  w = {k: (float(weights.get(k, 0.0)) if weights else 1.0) for k in present}
  if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
    raise ConfigError(f"weights={dict(weights or {})} give class {class_name!r} (kinds {present}) "
                      "no positive weight; give one of its kinds a weight > 0")
  return w


def pick_prompt(entry: Mapping, seed: int, class_id: int, index: int,
                weights: Mapping[str, float] | None = None) -> dict:
  """The prompt of image `index` of class `class_id`: a kind by weight, then one of its prompts.

  Args:
    entry: one element of prompts.json's "classes" (needs "prompts"; "name" for messages).
    seed: the run seed (config.seed of the generate job).
    class_id, index: which image; the draw depends on (seed, class_id, index) only.
    weights: {kind: weight}; kinds missing from a non-empty mapping get weight 0.
  Returns:
    the chosen {"text", "kind", "source"} dict (a copy).
  """
  prompts = [p for p in entry.get("prompts", []) if p.get("text")]
  w = kind_weights(prompts, weights, entry.get("name", str(class_id)))
  kinds = list(w)
  p = np.array([w[k] for k in kinds], np.float64)
  # synth_jax.diffusion.generate.pick_prompt calls this: one prompt per image, one stream.
  rng = streams.rng(int(seed), "prompt_choice", int(class_id), int(index))
  kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
  pool = [q for q in prompts if q.get("kind", "template") == kind]
  return dict(pool[int(rng.integers(len(pool)))])
