"""Yu et al., AuxBN vs plain mixing on the diversified set (10-shot).

  synth-jax sweep --config configs/study/yu_auxbn.py
Claim tested (facts.md 2.2, 2.4): separate BatchNorm statistics for synthetic images beat mixing.
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.study_config(
      arg, title="Study: Yu et al. AuxBN vs mix (diversified set, 10-shot)",
      axes=["method=auxbn,mix", "synthetic_set=diversified"], workdir="yu_auxbn")
