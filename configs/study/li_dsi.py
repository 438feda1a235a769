"""Li et al., Dataset Style Inversion: bridged++ on the template set vs on the set generated with
the style token that `synth-jax invert` learned on the 10-shot target images (configs/study/invert.py).

  synth-jax sweep --config configs/study/li_dsi.py
Claim tested (facts.md 1.4, 1.7): DSI's set beats the single template's (the paper: +0.4 to +2.6).
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.study_config(
      arg, title="Study: Li et al. DSI token vs plain template (bridged++, 10-shot)",
      axes=["method=bridged++", "synthetic_set=template,dsi"], workdir="li_dsi")
