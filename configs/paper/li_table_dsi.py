"""Li et al., Dataset Style Inversion table: Bridged++ with single-template prompts vs DSI prompts
("A {C_i} photo in the style of S*", facts.md 1.4).

  synth-jax sweep --config configs/paper/li_table_dsi.py --config.workdir=runs/li_dsi

Needs two synthetic sets per dataset: runs/synthetic/<dataset>_template and
runs/synthetic/<dataset>_dsi (generate with the DSI token learned by `synth-jax invert`, 20k steps:
the paper's only sourced DSI setting). `prompts` is an extra key of this config: it only names the
synthetic set (filled into `synthetic`), the trainer ignores it.

Paper numbers (top-1 %, facts.md 1.7; backbone presumably ResNet-18):
  dataset    single template   DSI
  aircraft   85.2              85.8
  cars       91.6              92.0
  dtd        72.3 ± 0.3 (**)   72.7 ± 0.3
  food101    84.2              84.6
  sun397     60.8              63.4
  (**) one source saw 71.5 ± 0.4 in this table's single-template row (version discrepancy).
  Other datasets: NOT FOUND.
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)

DATASETS = ("aircraft", "cars", "dtd", "food101", "sun397")
_T = {"aircraft": "85.2", "cars": "91.6", "dtd": "72.3 ± 0.3", "food101": "84.2", "sun397": "60.8"}
_D = {"aircraft": "85.8", "cars": "92.0", "dtd": "72.7 ± 0.3", "food101": "84.6", "sun397": "63.4"}
NUMBERS = {**{f"prompts=template,dataset={d}": v for d, v in _T.items()},
           **{f"prompts=dsi,dataset={d}": v for d, v in _D.items()}}


def get_config(arg=None):
  c = common.paper_config(
      arg or "method=bridged++,model=resnet18", title="Li et al., DSI table (Bridged++)",
      axes=["prompts=template,dsi", "dataset=" + ",".join(DATASETS), "seed=0,1,2"],
      numbers=NUMBERS, synthetic="runs/synthetic/{dataset}_{prompts}", workdir="runs/paper/li_table_dsi")
  c.prompts = "template"
  return c
