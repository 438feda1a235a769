"""Yu et al. (arXiv 2312.02253) prompts: LLM+CLIP class-name disambiguation, then contextualized
(CD) and stylized (SD) diversification.

    synth-jax prompts --config configs/prompts/yu.py:dataset=imagenet,llm=http://127.0.0.1:8000/v1,\
clip=/models/clip-vit-large-patch14 --config.llm.model=llama-3-8b-instruct \
        --config.manual_dir=~/imagenet --config.workdir=runs/prompts/imagenet
    # answers written by hand instead of a served LLM:
    synth-jax prompts --config configs/prompts/yu.py:folder=~/photos,llm=answers.json,clip=/models/clip \
        --config.workdir=runs/prompts/photos

Sourced (facts.md 2.2, abstract level): class names are disambiguated with an LLM and CLIP; CD and
SD prompts are produced by prompting an LLM; the generator is not fine-tuned. NOT FOUND (facts.md
2.3), so OURS: the LLM, the CLIP, the prompts sent to the LLM, the scoring rule (candidate text
vs the mean embedding of 16 real images), the number of contexts (8), the number of styles the
LLM writes per class (8; the paper's SD styles are LLM-prompted, so sd.from_llm is on here, and
templates.DEFAULT_STYLES is only the fallback of configs/prompts/base.py), and the equal CD:SD mix. Expected
output: one prompts.json with 8 CD + 16 SD prompts per class and each class's candidate
meanings and CLIP scores; feed it to `synth-jax generate` (configs/generate/base.py:prompts=...).
"""
from synth_jax.config import import_file

base = import_file("base.py", __file__)


def get_config(arg=None):
  a = arg or ""
  c = base.get_config(a if "strategies=" in a else ",".join(x for x in (a, "strategies=cd+sd") if x))
  c.disambiguate.enabled = True
  c.sd.from_llm = True  # facts.md 2.2: SD prompts are produced by prompting an LLM
  c.weights.cd = 1.0
  c.weights.sd = 1.0
  return c
