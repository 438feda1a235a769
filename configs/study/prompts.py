"""The study's prompts stage: `set=diversified` (Yu et al.: contextualized + stylized prompts, an
answers file standing in for the LLM) or `set=dsi` (Li et al.: the learned style token in the
slot where the generator's captions put a style word).

  synth-jax prompts --config configs/study/prompts.py:set=diversified --config.workdir=runs/study/prompts/diversified
  synth-jax prompts --config configs/study/prompts.py:set=dsi --config.workdir=runs/study/prompts/dsi

answers_yu.json gives every digit the contexts and styles the generator was trained on
(synth_jax/data/digit_styles.py: "drawn small", "near the edge"; thick, thin, outlined, blurred),
so CD prompts read "a digit three, drawn small" and SD prompts "a thick digit three". No CLIP
disambiguation (digit names are not ambiguous, and no CLIP ships offline).
"""
import os

from synth_jax.config import import_file, parse_arg

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = "zero,one,two,three,four,five,six,seven,eight,nine"
TOKEN = "<dataset-style>"  # the same token configs/study/invert.py learns


def get_config(arg=None):
  a = parse_arg(arg, set="diversified", seed=0)
  base = import_file("../prompts/base.py", __file__)
  if a.set == "diversified":
    c = base.get_config(f"strategies=cd+sd,llm={HERE}/answers_yu.json,seed={a.seed}")
    c.cd.template = "a digit {name}, {context}"
    c.cd.n, c.cd.min_items = 2, 2
    c.sd.template = "{style} digit {name}"
    c.sd.from_llm, c.sd.n, c.sd.min_items = True, 4, 4
  elif a.set == "dsi":
    c = base.get_config(f"strategies=dsi,seed={a.seed}")
    c.dsi.token = TOKEN
    c.dsi.template = "a {token} digit {name}"
  else:
    from synth_jax.errors import ConfigError
    raise ConfigError(f"set={a.set!r} is unknown; use set=diversified or set=dsi")
  c.class_names = CLASSES
  c.workdir = f"runs/study/prompts/{a.set}"
  return c
