"""ViT vs timm: eval logits (safetensors and .pth), export round trip, per-domain LayerNorm, posemb resample."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax.errors import WeightsError
from synth_jax.models import common, import_torch, vit, weights
from tests.models.helpers import images, torch_nhwc

TINY = dict(width=64, depth=2, mlp_dim=256, num_heads=2, patch_size=8)


def _timm_vit(num_classes=10, img_size=32):
  import timm
  import torch
  torch.manual_seed(0)
  m = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=img_size, patch_size=8, embed_dim=64,
                        depth=2, num_heads=2, num_classes=num_classes)
  with torch.no_grad():  # timm zero-inits some tensors; make every one matter
    for p in m.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  return m.eval()


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_eval_logits_match_timm(tmp_path, fmt):
  import torch
  tm = _timm_vit()
  path = str(tmp_path / f"v.{fmt}")
  if fmt == "pth":
    torch.save(tm.state_dict(), path)
  else:
    weights.write_safetensors(path, {k: v.numpy() for k, v in tm.state_dict().items()})
  model, params, _ = vit.ViTVariant("S/16").from_timm(path, num_classes=10, **TINY)
  x = images(2, 32)
  logits, out = jax.jit(model.apply)({"params": params}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
    feats = tm.forward_head(tm.forward_features(torch_nhwc(x)), pre_logits=True).numpy()
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  print(f"vit timm ({fmt}) eval max abs diff {diff:.2e}")
  assert diff <= 1e-4
  np.testing.assert_allclose(out["pre_logits"], feats, atol=1e-4)


def test_export_to_timm_round_trip():
  import torch
  tm = _timm_vit(num_classes=5)
  sd = import_torch.vit_to_timm(vit.ViTVariant("S/16").init(jax.random.key(1), num_classes=5, image_size=32,
                                                            **TINY)[1])
  tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  model = vit.ViT(variant="S/16", num_classes=5, **TINY)
  params = jax.tree.map(jnp.asarray, weights.unflatten(
      {k.removeprefix("params/"): v for k, v in import_torch.vit_from_timm(sd, 2).items()}))
  x = images(2, 32, seed=3)
  logits, _ = model.apply({"params": params}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  assert float(np.max(np.abs(np.asarray(logits) - ref))) <= 1e-4


def test_resample_posemb_matches_timm_bilinear(tmp_path):
  import torch
  from timm.layers import resample_abs_pos_embed
  pos = np.random.default_rng(0).standard_normal((1, 1 + 16, 64)).astype(np.float32)
  ours = common.resample_posemb(pos, (6, 6))
  ref = resample_abs_pos_embed(torch.from_numpy(pos), (6, 6), (4, 4), num_prefix_tokens=1,
                               interpolation="bilinear", antialias=False).numpy()
  assert ours.shape == (1, 37, 64)
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  tm = _timm_vit()
  path = str(tmp_path / "v.safetensors")
  weights.write_safetensors(path, {k: v.numpy() for k, v in tm.state_dict().items()})
  model, params, _ = vit.ViTVariant("S/16").from_timm(path, num_classes=10, image_size=48, **TINY)
  assert params["pos_embedding"].shape == (1, 37, 64)
  logits, _ = model.apply({"params": params}, images(1, 48))
  assert logits.shape == (1, 10)


def test_per_domain_layernorm_and_bad_checkpoint(tmp_path):
  import torch
  tm = _timm_vit()
  path = str(tmp_path / "v.pth")
  torch.save(tm.state_dict(), path)
  model, params, _ = vit.ViTVariant("S/16").from_timm(path, num_classes=10, domains=("real", "synthetic"),
                                                      separate_affine=True, **TINY)
  ln = params["Transformer"]["encoderblock_0"]["LayerNorm_0"]
  assert ln["scale"].shape == (2, 64)
  np.testing.assert_array_equal(ln["scale"][0], ln["scale"][1])
  x = images(4, 32)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  for domain in (None, 1, (2, 2), jnp.array([0, 1, 0, 1])):  # identical affine: every route is the plain model
    logits, _ = model.apply({"params": params}, x, domain=domain)
    assert float(np.max(np.abs(np.asarray(logits) - ref))) <= 1e-4
  params["Transformer"]["encoderblock_0"]["LayerNorm_0"]["bias"] = ln["bias"].at[1].add(1.0)
  a, _ = model.apply({"params": params}, x, domain=(2, 2))
  b, _ = model.apply({"params": params}, x, domain=0)
  np.testing.assert_allclose(a[:2], b[:2], atol=1e-5)
  assert not np.allclose(a[2:], b[2:])
  sd = tm.state_dict()
  del sd["blocks.1.attn.qkv.bias"]
  torch.save(sd, path)
  with pytest.raises(WeightsError, match="encoderblock_1/MultiHeadDotProductAttention_0/query/bias"):
    vit.ViTVariant("S/16").from_timm(path, num_classes=10, **TINY)


@pytest.mark.slow
def test_vit_b16_shapes_match_timm_augreg_layout(tmp_path):
  import timm
  tm = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10)
  path = str(tmp_path / "b16.safetensors")
  weights.write_safetensors(path, {k: v.numpy() for k, v in tm.state_dict().items()})
  model, params, _ = vit.vit_b16.from_timm(path, num_classes=10)  # strict: every tensor mapped and shaped
  assert params["pos_embedding"].shape == (1, 197, 768)
  assert len(params["Transformer"]) == 13  # 12 blocks + encoder_norm


def test_bf16_compute_keeps_fp32_params_and_tracks_fp32():
  model, params, _ = vit.ViTVariant("S/16").init(jax.random.key(0), num_classes=5, image_size=32, **TINY)
  params = common.reinit_head(params, jax.random.key(1))  # ViT's head starts at zero: logits would be 0
  model16 = model.clone(dtype=jnp.bfloat16)
  x = images(2, 32)
  fwd = jax.jit(lambda m, p, x: m.apply({"params": p}, x), static_argnums=0)
  (l16, out16), (l32, _) = fwd(model16, params, x), fwd(model, params, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert out16["stem"].dtype == jnp.bfloat16 and out16["block01"].dtype == jnp.bfloat16
  assert l16.dtype == jnp.float32 and out16["pre_logits"].dtype == jnp.float32
  rel = float(jnp.max(jnp.abs(l16 - l32)) / jnp.max(jnp.abs(l32)))
  print(f"vit bf16 vs fp32 logits: max abs diff / max |logit| = {rel:.2e}")
  assert 0 < rel < 5e-2  # bf16 really ran (not silently fp32), and stays close
  loss = lambda p: jnp.sum(model16.apply({"params": p}, x)[0] ** 2)  # noqa: E731
  grads = jax.jit(jax.grad(loss))(params)
  assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
