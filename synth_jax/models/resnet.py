"""ResNet-18/34/50/101/152 in Flax linen, torchvision layout (v1.5: stride on the 3x3), NHWC.

Every BatchNorm is a `DomainBatchNorm`, so `domains=("real", "synthetic")` gives the auxiliary-BN
model of "Diversify, Don't Fine-Tune"; with one domain the variables are those of a plain ResNet.

    from synth_jax.models import resnet50
    model, params, state = resnet50.from_torchvision("resnet50.pth", num_classes=100,
                                                     domains=("real", "synthetic"))
    logits, out = model.apply({"params": params, "batch_stats": state}, images)       # eval: domain 0
    (logits, out), upd = model.apply({"params": params, "batch_stats": state}, images, train=True,
                                     domain=(n_real, n_syn), mutable=["batch_stats"])

`out` holds named intermediates (big_vision style): stem, stage1..stage4, pre_logits, logits.
Flax names: conv1, bn1, layer{s}_{b}/{conv,bn}{1,2,3}, layer{s}_{b}/downsample_{conv,bn}, head.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from synth_jax.errors import ConfigError
from synth_jax.models.norm import DomainBatchNorm, check_domains

VARIANTS = {
    "18": ("basic", (2, 2, 2, 2)), "34": ("basic", (3, 4, 6, 3)),
    "50": ("bottleneck", (3, 4, 6, 3)), "101": ("bottleneck", (3, 4, 23, 3)),
    "152": ("bottleneck", (3, 8, 36, 3)),
}
# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"): untruncated normal.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default kernel init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
head_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def parse_variant(variant: str) -> tuple[str, tuple[int, ...]]:
  """'50' / 'resnet50' / 'R50' -> ('bottleneck', (3, 4, 6, 3)); 'bottleneck:1,1,1,1' for tiny tests."""
  v = str(variant).lower().removeprefix("resnet").removeprefix("r").lstrip("-")
  if ":" in v:
    block, sizes = v.split(":")
    if block in ("basic", "bottleneck"):
      return block, tuple(int(s) for s in sizes.split(","))
  if v in VARIANTS:
    return VARIANTS[v]
  raise ConfigError(f"unknown ResNet variant {variant!r}; use one of {sorted(VARIANTS, key=int)} "
                    "or 'basic:2,2,2,2' / 'bottleneck:3,4,6,3'")


class Block(nn.Module):
  """A torchvision BasicBlock or Bottleneck (expansion 4)."""
  filters: int
  strides: int
  bottleneck: bool
  downsample: bool
  conv: Any
  norm: Any
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x, *, train, domain):
    bn = lambda name, **kw: functools.partial(self.norm(name=name, **kw), train=train, domain=domain)  # noqa: E731
    last_kw = {"scale_init": nn.initializers.zeros} if self.zero_init_residual else {}
    residual = x
    if self.bottleneck:
      y = nn.relu(bn("bn1")(self.conv(self.filters, (1, 1), name="conv1")(x)))
      y = nn.relu(bn("bn2")(self.conv(self.filters, (3, 3), self.strides, padding=1, name="conv2")(y)))
      y = bn("bn3", **last_kw)(self.conv(self.filters * 4, (1, 1), name="conv3")(y))
      out_ch = self.filters * 4
    else:
      y = nn.relu(bn("bn1")(self.conv(self.filters, (3, 3), self.strides, padding=1, name="conv1")(x)))
      y = bn("bn2", **last_kw)(self.conv(self.filters, (3, 3), padding=1, name="conv2")(y))
      out_ch = self.filters
    if self.downsample:
      residual = self.conv(out_ch, (1, 1), self.strides, name="downsample_conv")(x)
      residual = bn("downsample_bn")(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """torchvision-compatible ResNet returning `(logits, out)`.

  Attributes:
    variant: "18", "34", "50", "101", "152" (or "basic:..."/"bottleneck:..." stage sizes).
    num_classes: head size; 0 = no head (logits are the pre-logits).
    domains: domain names; BN statistics are kept per domain, domain 0 is used at eval.
    separate_affine: per-domain BN scale/bias too.
    dtype: compute dtype (jnp.bfloat16 for speed); BN statistics stay float32.
    param_dtype: parameter dtype (float32).
    bn_momentum: Flax convention, 0.9 == torch's momentum=0.1.
    zero_init_residual: last BN of each block starts at zero (Flax imagenet / Goyal et al.).
  """
  variant: str = "50"
  num_classes: int = 1000
  domains: Sequence[str] = ("real",)
  separate_affine: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool = False, domain: Any = None):
    kind, stages = parse_variant(self.variant)
    domains = check_domains(self.domains)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                             kernel_init=_conv_init)
    norm = functools.partial(DomainBatchNorm, num_domains=len(domains), separate_affine=self.separate_affine,
                             momentum=self.bn_momentum, dtype=self.dtype, param_dtype=self.param_dtype)
    out = {}
    x = jnp.asarray(x, self.dtype)
    # Explicit torch padding: "SAME" would pad (2, 3) for the strided 7x7 and shift every pixel.
    x = conv(64, (7, 7), 2, padding=3, name="conv1")(x)
    x = nn.relu(norm(name="bn1")(x, train=train, domain=domain))
    x = out["stem"] = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    in_ch = 64
    for s, n in enumerate(stages):
      filters = 64 * 2**s
      out_ch = filters * (4 if kind == "bottleneck" else 1)
      for b in range(n):
        strides = 2 if (s > 0 and b == 0) else 1
        x = Block(filters, strides, kind == "bottleneck", downsample=(b == 0 and (strides != 1 or in_ch != out_ch)),
                  conv=conv, norm=norm, zero_init_residual=self.zero_init_residual,
                  name=f"layer{s + 1}_{b}")(x, train=train, domain=domain)
        in_ch = out_ch
      out[f"stage{s + 1}"] = x
    x = out["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=head_init,
                   name="head")(x.astype(self.dtype))
    x = out["logits"] = x.astype(jnp.float32)
    return x, out


@dataclasses.dataclass(frozen=True)
class ResNetVariant:
  """`resnet50.init(...)`, `resnet50.from_torchvision(path, ...)`, `resnet50(num_classes=...)`."""
  variant: str

  def __call__(self, **kw) -> ResNet:
    return ResNet(variant=self.variant, **kw)

  def init(self, rng, num_classes: int = 1000, domains=("real",), image_size: int = 224,
           place=None, **kw):
    """Random init -> (model, params, batch_stats), placed by `place(variables)` when given."""
    model = self(num_classes=num_classes, domains=tuple(domains), **kw)
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    # place: abstract variables -> shardings, so each device materializes only its own slices
    out = place(jax.eval_shape(model.init, rng, x)) if place is not None else None
    v = jax.jit(model.init, out_shardings=out)(rng, x)
    return model, v["params"], v["batch_stats"]

  def from_torchvision(self, path: str, num_classes: int = 1000, domains=("real",), keep_head=None,
                       place=None, **kw):
    """torchvision/timm ResNet .pth/.safetensors -> (model, params, batch_stats); see import_torch.
    `place`: as in `init` (each tensor goes from the host straight to its shards)."""
    from synth_jax.models import import_torch
    return import_torch.load_resnet(path, self(num_classes=num_classes, domains=tuple(domains), **kw),
                                    keep_head=keep_head, place=place)

  from_timm = from_torchvision

  def from_hf(self, folder: str, num_classes: int = 1000, domains=("real",), keep_head=None,
              place=None, **kw):
    """Hugging Face ResNetModel / ResNetForImageClassification folder -> (model, params, batch_stats)."""
    from synth_jax.models import import_hf
    return import_hf.load_resnet(folder, self(num_classes=num_classes, domains=tuple(domains), **kw),
                                 keep_head=keep_head, place=place)


resnet18, resnet34, resnet50, resnet101, resnet152 = (ResNetVariant(v) for v in ("18", "34", "50", "101", "152"))
