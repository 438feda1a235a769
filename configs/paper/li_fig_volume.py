"""Li et al., data-volume figure: accuracy vs synthetic images per class, vanilla vs Bridged++.

  synth-jax sweep --config configs/paper/li_fig_volume.py --config.workdir=runs/li_volume

The plot (accuracy.png) has volume on x and one line per method/dataset. Sourced (facts.md 1.3):
the volume study spans 500 to 3,000 synthetic images per class on Aircraft, Cars and Food-101,
and accuracy keeps rising across that range. The exact x positions are NOT FOUND: ours are every
500. Each point takes `volume` images per class (drawn per (seed, class) by
sources.few_shot_indices) from ONE set of 3,000 per class, runs/synthetic/<dataset>_template_3k
(Li's single template, like li_table_main's 1k set), so smaller volumes are subsets of larger
ones. Every number of this figure is NOT FOUND (plot only). vanilla does not read synthetic data,
so its line is flat by design (the reference level).
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.paper_config(
      arg or "model=resnet18", title="Li et al., accuracy vs synthetic volume",
      axes=["method=vanilla,bridged++", "dataset=aircraft,cars,food101",
            "volume=500,1000,1500,2000,2500,3000", "seed=0,1,2"],
      numbers={}, synthetic="runs/synthetic/{dataset}_template_3k", workdir="runs/paper/li_fig_volume")
