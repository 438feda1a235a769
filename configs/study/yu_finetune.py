"""Yu et al.'s central question: the off-the-shelf generator with diversified prompts vs the same
generator fine-tuned on the 10-shot target images (`synth-jax finetune`, configs/study/finetune.py;
template prompts), both with AuxBN.

  synth-jax sweep --config configs/study/yu_finetune.py
Claim tested (facts.md 2.2, the title): diversify, don't fine-tune.
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.study_config(
      arg, title="Study: Yu et al. diversified off-the-shelf vs fine-tuned generator (AuxBN, 10-shot)",
      axes=["method=auxbn", "synthetic_set=diversified,finetuned"], workdir="yu_finetune")
