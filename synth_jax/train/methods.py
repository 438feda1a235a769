"""Methods as configs: which stages run, on which data, with which regularisers.

Every method is a list of stages; each stage names its hyperparameter group (`config.stage1` or
`config.stage2`) and its data source:

  vanilla         stage2 on real images (fine-tune the pretrained model on the target set)
  mix             stage2 on real + synthetic in one stream; `config.mix_ratio` = synthetic fraction
  synthetic_only  stage2 on synthetic images, evaluated on real test images
  bridged         stage1 on synthetic (Mixup on by default), classifier head re-initialised, stage2
                  on real (Mixup off by default). The regularisers are those of the issue's definition
  bridged_plain   the paper's plain "Bridged" row (Li et al.): no FC reinit, no stage-1 Mixup
  bridged_fc      "+ FC Reinit": reinit, no Mixup
  bridged++       "+ FC Reinit & Mixup" (facts.md 1.5): the same regularisers as `bridged`
  auxbn           one stage on paired real/synthetic batches, per-domain BatchNorm, eval with real BN

Stage 1 Mixup α comes from `config.stage1.mixup_alpha` for methods that use Mixup there; methods
that must not use it (bridged_plain, bridged_fc) force 0. Stage 2 uses `config.stage2.mixup_alpha`
(0 by default) except auxbn, which never mixes (pairs across domains would mix BN routes).
"""
from __future__ import annotations

import dataclasses

from synth_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class StagePlan:
  name: str                 # "stage1" | "stage2": the config group with its hyperparameters
  source: str               # "real" | "synthetic" | "mix" | "paired"
  mixup: bool               # whether this stage may use the group's mixup/cutmix alphas
  reinit_head_before: bool  # replace the classifier head before this stage starts


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  stages: tuple[StagePlan, ...]
  domains: tuple[str, ...] = ("real",)

  @property
  def needs_synthetic(self) -> bool:
    return any(s.source != "real" for s in self.stages)


def _bridged(name: str, reinit: bool, mixup: bool) -> Method:
  return Method(name, (StagePlan("stage1", "synthetic", mixup, False),
                       StagePlan("stage2", "real", True, reinit)))


METHODS = {
    "vanilla": Method("vanilla", (StagePlan("stage2", "real", True, False),)),
    "mix": Method("mix", (StagePlan("stage2", "mix", True, False),)),
    "synthetic_only": Method("synthetic_only", (StagePlan("stage2", "synthetic", True, False),)),
    "bridged": _bridged("bridged", reinit=True, mixup=True),
    "bridged_plain": _bridged("bridged_plain", reinit=False, mixup=False),
    "bridged_fc": _bridged("bridged_fc", reinit=True, mixup=False),
    "bridged++": _bridged("bridged++", reinit=True, mixup=True),
    "auxbn": Method("auxbn", (StagePlan("stage2", "paired", False, False),), domains=("real", "synthetic")),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ConfigError(f"method {name!r} is unknown; use one of {', '.join(METHODS)}")
  return METHODS[name]
