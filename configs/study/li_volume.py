"""Li et al., synthetic volume: bridged++ with 10, 20, 40, 80 synthetic images per class (1x to 8x
the 10 real images per class), template set.

  synth-jax sweep --config configs/study/li_volume.py
Claim tested (facts.md 1.2, 1.3): accuracy keeps rising with synthetic volume (not saturated).
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.study_config(
      arg, title="Study: Li et al. synthetic volume (bridged++, 10-shot)",
      axes=["method=bridged++", "volume=10,20,40,80"], workdir="li_volume")
