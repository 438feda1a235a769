"""Li et al., few-shot figure: k real images per class, vanilla vs Bridged++.

  synth-jax sweep --config configs/paper/li_fig_fewshot.py --config.workdir=runs/li_fewshot

Shot counts, the sampling procedure and the number of seeds are NOT FOUND (one review says "1-16";
1/2/4/8/16 is a reviewer's suggestion, used here). Few-shot subsets are drawn per (seed, class)
by synth_jax.data.sources.few_shot_indices. The only number in the sources is a claim of "up to
60%" improvement in 4-shot Cars (relative or absolute: NOT FOUND), noted on that cell; every other
point is NOT FOUND (plot only). x axis of accuracy.png: shots.

Schedule (OURS; the paper's is NOT FOUND): configs/train/base.py's few-shot rule trains every
point to convergence: the batch is capped by the k*C real images, a phase trains at least
phaseN.min_steps=500 steps (BiT-HyperRule's count for sets under 20k images), and after
bridged++ the BN statistics are re-estimated on the real images before evaluation. Without it a
1-shot pets phase 2 had 4 steps (issue 17).
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  c = common.paper_config(
      arg or "model=resnet18", title="Li et al., few-shot (k real per class)",
      axes=["method=vanilla,bridged++", "dataset=" + ",".join(common.LI_DATASETS), "shots=1,2,4,8,16",
            "seed=0,1,2"],
      numbers={"method=bridged++,dataset=cars,shots=4": "up to +60% over vanilla (relative or absolute: NOT FOUND)"},
      workdir="runs/paper/li_fig_fewshot")
  return c
