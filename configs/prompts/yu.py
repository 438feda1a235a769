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
vs the mean embedding of 16 real images), the number of contexts (8), the style list
(templates.DEFAULT_STYLES; --config.sd.from_llm=true asks the LLM for 8 per class instead), and
the equal CD:SD mix. Expected
output: one prompts.json with 8 CD + 16 SD prompts per class and each class's candidate
meanings and CLIP scores; feed it to `synth-jax generate` (configs/generate/base.py:prompts=...).
"""
from synth_jax.config import import_file

base = import_file("base.py", __file__)


def get_config(arg=None):
  a = arg or ""
  c = base.get_config(a if "strategies=" in a else ",".join(x for x in (a, "strategies=cd+sd") if x))
  c.disambiguate.enabled = True
  c.weights.cd = 1.0
  c.weights.sd = 1.0
  return c
