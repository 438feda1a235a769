"""Li et al., the methods table at study scale: vanilla, mix, synthetic_only, bridged_plain,
bridged_fc, bridged++ on the 10-shot target task, template synthetic set (80 per class).

  synth-jax sweep --config configs/study/li_methods.py
Claims tested (facts.md 1.2, 1.5, 1.7): mixing synthetic images into the real set does not reliably
help (the paper: 6-10 points below vanilla); plain bridged can be worse than vanilla; bridged++
(FC reinit + phase-1 Mixup) beats vanilla.
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.study_config(
      arg, title="Study: Li et al. methods (10-shot, template set, 8x volume)",
      axes=["method=vanilla,mix,synthetic_only,bridged_plain,bridged_fc,bridged++"],
      workdir="li_methods")
