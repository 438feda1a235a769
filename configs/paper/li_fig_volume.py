"""Li et al., data-volume figure: accuracy vs synthetic images per class, vanilla vs Bridged++.

  synth-jax sweep --config configs/paper/li_fig_volume.py --config.workdir=runs/li_volume

The plot (accuracy.png) has volume on x and one line per method/dataset. The volumes the paper
plots are NOT FOUND (the sources only say mixed transfer used 1k synthetic images per class and
that accuracy keeps improving with volume); the grid below is ours. Every number of this figure
is NOT FOUND (plot only). vanilla does not read synthetic data, so its line is flat by design
(the reference level).
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  return common.paper_config(
      arg or "model=resnet18", title="Li et al., accuracy vs synthetic volume",
      axes=["method=vanilla,bridged++", "dataset=aircraft,cars", "volume=100,250,500,1000", "seed=0,1,2"],
      numbers={}, workdir="runs/paper/li_fig_volume")
