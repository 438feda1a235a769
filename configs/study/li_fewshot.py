"""Li et al., few-shot: vanilla vs bridged++ with k = 1, 5, 10 and all (-1: ~72) real images per class.

  synth-jax sweep --config configs/study/li_fewshot.py
Claim tested (facts.md 1.6, 1.7): bridged++ helps most when real images are few.
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.study_config(
      arg, title="Study: Li et al. few-shot (template set, 80 per class)",
      axes=["method=vanilla,bridged++", "shots=1,5,10,-1"], workdir="li_fewshot")
