"""Yu et al. (arXiv 2312.02253), "Diversify, Don't Fine-Tune": ImageNet training with synthetic
images up to 6x ImageNet's size, real-only vs naive mixing vs auxiliary BatchNorm (auxbn).

  synth-jax sweep --config configs/paper/yu_imagenet_scale.py --config.workdir=runs/yu_scale

Needs ImageNet (registry name "imagenet": the ILSVRC2012 tars in ~/downloads/imagenet for tfds,
--config.manual_dir; evaluated on the registry's split, validation) and synthetic sets at
runs/synthetic/imagenet_<k>x made with disambiguated class names + CD/SD diversified prompts
(`synth-jax prompts`, `synth-jax generate`). `scale` is an extra key naming the set; `volume`
stays -1 (use the whole set).

Sourced (abstract level, facts.md 2.2): the generator is not fine-tuned; synthetic data up to 6x
ImageNet keeps improving accuracy; ImageNet-val top-1 improves by +1.20 to +2.35 points depending
on the architecture (which architecture gets which: NOT FOUND); ImageNet-Sketch / -Rendition
improve by about +10 with large ViTs: every point is also evaluated on `imagenet_sketch` and
`imagenet_r` (tfds; ImageNet-R on its 200 classes), reported under results.json "extra_eval".
Both CNNs and ViTs are used (facts.md 2.2): the grid has ResNet-50, ViT-B/16 and ViT-L/16 (which
ones the paper used: NOT FOUND, ours). NOT FOUND: every table cell, the per-scale images per
class, the AuxBN batch split (ours: equal halves, AdvProp convention, facts.md 2.4), whether the
affine is shared (ours: shared for ResNets, `auxbn_separate_affine`), all training
hyperparameters, and how AuxBN applies to ViTs: ours is per-domain LayerNorm affine
(auxbn_separate_affine=True, tied to the ViT models), since LayerNorm has no statistics and
shared parameters would make auxbn a plain 50/50 mix. vanilla ignores `scale`, so its four points
per model are repeats of one run (kept so every cell has its real-only reference).
"""
from synth_jax.config import import_file

common = import_file("common.py", __file__)


def get_config(arg=None):
  c = common.paper_config(
      arg or "model=resnet50,dataset=imagenet",
      title="Yu et al., ImageNet + synthetic (paper: +1.20 to +2.35 top-1 with AuxBN, per-arch cells NOT FOUND)",
      axes=["model=resnet50,vit_b16,vit_l16", "method=vanilla,mix,auxbn", "scale=1,2,4,6", "seed=0"],
      numbers={f"model={m},method=auxbn,scale=6": "+1.20..+2.35 over real-only (architecture unmapped)"
               for m in ("resnet50", "vit_b16", "vit_l16")},
      synthetic="runs/synthetic/imagenet_{scale}x", workdir="runs/paper/yu_imagenet_scale")
  c.scale = 1
  c.extra_eval = ("imagenet_sketch", "imagenet_r")  # Yu's out-of-domain evaluation
  for vit in ("vit_b16", "vit_l16"):  # auxbn on a ViT: per-domain LayerNorm affine (ours)
    c.sweep_tied.model[vit]["auxbn_separate_affine"] = True
  return c
