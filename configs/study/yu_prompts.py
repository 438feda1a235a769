"""Yu et al., prompts: the plain template set vs contextualized + stylized prompts
(configs/study/prompts_yu.py with answers_yu.json standing in for the LLM), both trained with
AuxBN (real and synthetic batches through separate BatchNorm statistics).

  synth-jax sweep --config configs/study/yu_prompts.py
Claim tested (facts.md 2.2): diversified prompts give better training data than a template.
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.study_config(
      arg, title="Study: Yu et al. template vs contextualized + stylized prompts (AuxBN, 10-shot)",
      axes=["method=auxbn", "synthetic_set=template,diversified"], workdir="yu_prompts")
