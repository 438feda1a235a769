"""Vision Transformer (ViT-Ti/S/B/L/H, any patch size) in Flax linen, big_vision parameter names.

Semantics follow timm / the original vision_transformer code: a class token, a learned position
embedding that covers the class token too (`pos_embedding` is (1, 1 + h*w, D), so timm, HF and the
augreg .npz files load without re-mixing), pre-norm blocks with exact GELU, the class token's final
LayerNorm output as `pre_logits`. Returns `(logits, out)` with stem, tokens (the encoder's input),
block{i}, encoded, pre_logits, logits.

CLIP's image tower is this ViT with four options (see `clip_vision`): `patch_bias=False`,
`pre_norm=True` (a LayerNorm on the tokens before the encoder), `mlp_act="quick_gelu"` (OpenAI) and
`head_bias=False` (the head is CLIP's visual projection).

With `domains=("real", "synthetic")` and `separate_affine=True` every LayerNorm has one affine pair
per domain (the ViT analogue of auxiliary BN); ViT has no running statistics, so with shared affine
the domains only label the batch.

    model, params, _ = vit_b16.from_timm("vit_base_patch16_224.augreg_in21k.safetensors", num_classes=100)
    logits, out = model.apply({"params": params}, images)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from synth_jax.errors import ConfigError
from synth_jax.models.common import ACTIVATIONS
from synth_jax.models.norm import DomainLayerNorm, check_domains

# name -> (width, depth, mlp_dim, heads)
WIDTHS = {"Ti": (192, 12, 768, 3), "S": (384, 12, 1536, 6), "M": (512, 12, 2048, 8),
          "B": (768, 12, 3072, 12), "L": (1024, 24, 4096, 16), "H": (1280, 32, 5120, 16)}
_dense_init = nn.initializers.xavier_uniform()


def parse_variant(variant: str) -> tuple[int, int, int, int, int]:
  """'B/16' -> (width 768, depth 12, mlp 3072, heads 12, patch 16)."""
  try:
    name, patch = str(variant).split("/")
    return (*WIDTHS[name], int(patch))
  except (ValueError, KeyError):
    raise ConfigError(f"unknown ViT variant {variant!r}; use '<size>/<patch>' with size in {list(WIDTHS)}, "
                      "e.g. 'B/16'") from None


class Attention(nn.Module):
  num_heads: int
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    hd = d // self.num_heads
    dense = functools.partial(nn.DenseGeneral, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=_dense_init)
    q, k, v = (dense((self.num_heads, hd), name=n)(x) for n in ("query", "key", "value"))
    y = jax.nn.dot_product_attention(q, k, v)  # (B, T, H, hd); cuDNN/flash where XLA has it
    return dense(d, axis=(-2, -1), name="out")(y)


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  norm: Any
  dtype: Any
  param_dtype: Any
  mlp_act: str = "gelu"

  @nn.compact
  def __call__(self, x, *, domain):
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_dense_init,
                              bias_init=nn.initializers.normal(1e-6))
    y = self.norm(name="LayerNorm_0")(x, domain=domain)
    x = x + Attention(self.num_heads, self.dtype, self.param_dtype, name="MultiHeadDotProductAttention_0")(y)
    y = self.norm(name="LayerNorm_1")(x, domain=domain)
    y = _Mlp(self.mlp_dim, dense, self.mlp_act, name="MlpBlock_0")(y)
    return x + y


class _Mlp(nn.Module):
  mlp_dim: int
  dense: Any
  act: str

  @nn.compact
  def __call__(self, x):
    y = ACTIVATIONS[self.act](self.dense(self.mlp_dim, name="Dense_0")(x))
    return self.dense(x.shape[-1], name="Dense_1")(y)


class Encoder(nn.Module):
  depth: int
  num_heads: int
  mlp_dim: int
  norm: Any
  dtype: Any
  param_dtype: Any
  mlp_act: str = "gelu"

  @nn.compact
  def __call__(self, x, *, domain):
    out = {}
    for i in range(self.depth):
      x = out[f"block{i:02d}"] = EncoderBlock(self.num_heads, self.mlp_dim, self.norm, self.dtype, self.param_dtype,
                                              self.mlp_act, name=f"encoderblock_{i}")(x, domain=domain)
    return self.norm(name="encoder_norm")(x, domain=domain), out


class ViT(nn.Module):
  """ViT classifier returning `(logits, out)`.

  Attributes:
    variant: "S/16", "B/16", "L/16", ... ; width/depth/mlp_dim/num_heads/patch_size override it.
    num_classes: head size; 0 = no head.
    domains: domain names; domain 0 is used at eval.
    separate_affine: per-domain LayerNorm scale/bias.
    ln_eps: LayerNorm epsilon (timm/big_vision 1e-6; HF ViT 1e-12, taken from its config; CLIP 1e-5).
    mlp_act: MLP activation, a key of `common.ACTIVATIONS` ("gelu" is exact; CLIP uses "quick_gelu").
    patch_bias: bias on the patch embedding conv (CLIP has none).
    pre_norm: a LayerNorm ("pre_norm") on the tokens before the encoder (CLIP's `ln_pre`).
    head_bias: bias on the head (CLIP's visual projection has none).
    dtype / param_dtype: compute and parameter dtypes.
  """
  variant: str = "B/16"
  num_classes: int = 1000
  domains: Sequence[str] = ("real",)
  separate_affine: bool = False
  ln_eps: float = 1e-6
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  patch_size: int | None = None
  mlp_act: str = "gelu"
  patch_bias: bool = True
  pre_norm: bool = False
  head_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def dims(self) -> tuple[int, int, int, int, int]:
    base = parse_variant(self.variant)
    over = (self.width, self.depth, self.mlp_dim, self.num_heads, self.patch_size)
    return tuple(o if o is not None else b for o, b in zip(over, base))

  @nn.compact
  def __call__(self, image, *, train: bool = False, domain: Any = None):
    del train  # no dropout / stochastic depth (yet); kept for a uniform model signature
    width, depth, mlp_dim, heads, patch = self.dims()
    if self.mlp_act not in ACTIVATIONS:
      raise ConfigError(f"ViT mlp_act {self.mlp_act!r} is unknown; use one of {sorted(ACTIVATIONS)}")
    norm = functools.partial(DomainLayerNorm, num_domains=len(check_domains(self.domains)),
                             separate_affine=self.separate_affine, epsilon=self.ln_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    out = {}
    x = jnp.asarray(image, self.dtype)
    x = out["stem"] = nn.Conv(width, (patch, patch), strides=(patch, patch), padding="VALID", use_bias=self.patch_bias,
                              dtype=self.dtype, param_dtype=self.param_dtype, name="embedding")(x)
    n, h, w, c = x.shape
    x = jnp.reshape(x, (n, h * w, c))
    cls = self.param("cls", nn.initializers.normal(1e-6), (1, 1, c), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (n, 1, c)), x], axis=1)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, 1 + h * w, c), self.param_dtype)
    x = x + pos.astype(self.dtype)
    if self.pre_norm:
      x = norm(name="pre_norm")(x, domain=domain)
    out["tokens"] = x
    x, blocks = Encoder(depth, heads, mlp_dim, norm, self.dtype, self.param_dtype, self.mlp_act, name="Transformer")(
        x, domain=domain)
    out.update(blocks)
    out["encoded"] = x
    x = out["pre_logits"] = x[:, 0].astype(jnp.float32)
    if self.num_classes:
      x = nn.Dense(self.num_classes, use_bias=self.head_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                   kernel_init=nn.initializers.zeros, name="head")(x.astype(self.dtype))
    x = out["logits"] = x.astype(jnp.float32)
    return x, out


@dataclasses.dataclass(frozen=True)
class ViTVariant:
  """`vit_b16.init(...)`, `.from_timm(path)`, `.from_hf(folder)`, `.from_big_vision(npz)`, `vit_b16(...)`."""
  variant: str

  def __call__(self, **kw) -> ViT:
    return ViT(variant=self.variant, **kw)

  def init(self, rng, num_classes: int = 1000, domains=("real",), image_size: int = 224,
           place=None, **kw):
    """Random init -> (model, params, {}), placed by `place(variables)` when given."""
    model = self(num_classes=num_classes, domains=tuple(domains), **kw)
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    # place: abstract variables -> shardings, so each device materializes only its own slices
    out = place(jax.eval_shape(model.init, rng, x)) if place is not None else None
    v = jax.jit(model.init, out_shardings=out)(rng, x)
    return model, v["params"], {}

  def from_timm(self, path: str, num_classes: int = 1000, domains=("real",), image_size=None, keep_head=None,
                place=None, **kw):
    """timm ViT .safetensors/.pth (augreg included) -> (model, params, {}); see import_torch."""
    from synth_jax.models import import_torch
    return import_torch.load_vit(path, self(num_classes=num_classes, domains=tuple(domains), **kw),
                                 image_size=image_size, keep_head=keep_head, place=place)

  def from_hf(self, folder: str, num_classes: int = 1000, domains=("real",), image_size=None, keep_head=None,
              place=None, **kw):
    """Hugging Face ViTModel / ViTForImageClassification folder -> (model, params, {})."""
    from synth_jax.models import import_hf
    return import_hf.load_vit(folder, self(num_classes=num_classes, domains=tuple(domains), **kw),
                              image_size=image_size, keep_head=keep_head, place=place)

  def from_big_vision(self, path: str, num_classes: int = 1000, domains=("real",), image_size=None,
                      keep_head=None, place=None, **kw):
    """big_vision / vision_transformer ViT .npz -> (model, params, {}), position embeddings resampled."""
    from synth_jax.models import import_big_vision
    return import_big_vision.load_vit(path, self(num_classes=num_classes, domains=tuple(domains), **kw),
                                      image_size=image_size, keep_head=keep_head, place=place)


vit_s16, vit_b16, vit_l16, vit_b32 = (ViTVariant(v) for v in ("S/16", "B/16", "L/16", "B/32"))
