"""synth_jax.models: Flax ResNet / ViT with per-domain normalization, and weight import/export.

    from synth_jax.models import resnet50, vit_b16
    model, params, state = resnet50.from_torchvision("resnet50.pth", num_classes=100,
                                                     domains=("real", "synthetic"))

`CLIPVisionModel` is CLIP's image tower: this ViT with CLIP's options (`clip_vision`).

Import-light: jax/flax only (torch is imported inside the importers; clip/clip_text are not
imported here).
"""
from synth_jax.models.clip_vision import CLIPVisionModel
from synth_jax.models.common import reinit_head, resample_posemb
from synth_jax.models.norm import DomainBatchNorm, DomainLayerNorm, domain_ids
from synth_jax.models.resnet import (ResNet, ResNetVariant, resnet18, resnet34, resnet50, resnet101,
                                     resnet152)
from synth_jax.models.vit import ViT, ViTVariant, vit_b16, vit_b32, vit_l16, vit_s16

__all__ = [
    "CLIPVisionModel", "DomainBatchNorm", "DomainLayerNorm", "ResNet", "ResNetVariant", "ViT", "ViTVariant",
    "domain_ids", "reinit_head", "resample_posemb", "resnet18", "resnet34",
    "resnet50", "resnet101", "resnet152", "vit_b16", "vit_b32", "vit_l16", "vit_s16",
]
