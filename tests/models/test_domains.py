"""Per-domain BatchNorm: separate statistics, static split == per-example ids, eval is read-only."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax.errors import ConfigError
from synth_jax.models import DomainBatchNorm, import_torch, reinit_head, resnet, vit, weights
from tests.models.helpers import images, torch_nhwc

TINY = resnet.ResNetVariant("basic:1,1,1,1")


def _bn(d=2, sep=False):
  m = DomainBatchNorm(num_domains=d, separate_affine=sep)
  v = m.init(jax.random.key(0), jnp.zeros((4, 3, 3, 5)))
  return m, v


def _train(m, v, x, domain):
  y, upd = m.apply(v, x, train=True, domain=domain, mutable=["batch_stats"])
  return y, {**v, **upd}


def test_real_after_synthetic_equals_real_only():
  m, v0 = _bn()
  real = np.random.default_rng(1).standard_normal((4, 3, 3, 5)).astype(np.float32)
  syn = 3 + 2 * np.random.default_rng(2).standard_normal((4, 3, 3, 5)).astype(np.float32)
  for spec_syn, spec_real in ((1, 0), ((0, 4), (4, 0)), (jnp.ones(4, jnp.int32), jnp.zeros(4, jnp.int32))):
    _, v_a = _train(m, v0, syn, spec_syn)
    _, v_a = _train(m, v_a, real, spec_real)
    _, v_b = _train(m, v0, real, spec_real)
    np.testing.assert_array_equal(v_a["batch_stats"]["mean"][0], v_b["batch_stats"]["mean"][0])
    np.testing.assert_array_equal(v_a["batch_stats"]["var"][0], v_b["batch_stats"]["var"][0])
    assert not np.allclose(v_a["batch_stats"]["mean"][1], 0)  # the synthetic row moved


def test_split_equals_ids_and_separate_halves():
  m, v0 = _bn(sep=True)
  v0 = jax.tree.map(lambda a: a + jax.random.uniform(jax.random.key(3), a.shape), v0)
  x = np.random.default_rng(0).standard_normal((6, 3, 3, 5)).astype(np.float32)
  y_split, v_split = _train(m, v0, x, (2, 4))
  ids = jnp.array([0, 0, 1, 1, 1, 1])
  y_ids, v_ids = _train(m, v0, x, ids)
  np.testing.assert_allclose(y_split, y_ids, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), v_split, v_ids)
  # each half is normalized with its own statistics, as two plain BNs would do
  y0, _ = _train(m, v0, x[:2], 0)
  y1, _ = _train(m, v0, x[2:], 1)
  np.testing.assert_allclose(y_split, np.concatenate([y0, y1]), atol=1e-5)


def test_eval_leaves_stats_unchanged_and_uses_domain0():
  model, params, stats = TINY.init(jax.random.key(0), num_classes=3, domains=("real", "synthetic"), image_size=32)
  stats = jax.tree.map(lambda a: a.at[1].add(1.0), stats)  # make the domains differ
  v = {"params": params, "batch_stats": stats}
  x = images(2, 32)
  _, upd = jax.jit(lambda v, x: model.apply(v, x, mutable=["batch_stats"]))(v, x)
  jax.tree.map(np.testing.assert_array_equal, upd["batch_stats"], stats)
  ev = jax.jit(model.apply, static_argnames="domain")
  l_default, _ = ev(v, x)
  l_real, _ = ev(v, x, domain=0)
  l_syn, _ = ev(v, x, domain=1)
  np.testing.assert_array_equal(l_default, l_real)
  assert not np.allclose(l_real, l_syn)


def test_one_domain_is_the_plain_tree_and_plain_ckpt_fills_every_domain(tmp_path):
  import torch
  import torchvision
  m1, p1, s1 = TINY.init(jax.random.key(0), num_classes=3, image_size=32)
  shapes = {k: v.shape for k, v in weights.flatten({"p": p1, "s": s1}).items()}
  assert shapes["p/bn1/scale"] == (64,) and shapes["s/bn1/mean"] == (64,)
  tm = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3)
  sd = tm.state_dict()
  with torch.no_grad():
    sd["bn1.running_mean"].copy_(torch.arange(64.0))
  path = str(tmp_path / "plain.pth")
  torch.save(sd, path)
  _, p2, s2 = TINY.from_torchvision(path, num_classes=3, domains=("real", "synthetic"), separate_affine=True)
  assert s2["bn1"]["mean"].shape == (2, 64) and p2["bn1"]["scale"].shape == (2, 64)
  np.testing.assert_array_equal(s2["bn1"]["mean"][0], np.arange(64.0))
  np.testing.assert_array_equal(s2["bn1"]["mean"][1], np.arange(64.0))


def test_bad_domain_specs_are_config_errors():
  m, v = _bn()
  x = jnp.zeros((4, 3, 3, 5))
  for bad in ((1, 2), 5, jnp.zeros((3,), jnp.int32)):
    with pytest.raises(ConfigError):
      m.apply(v, x, train=True, domain=bad, mutable=["batch_stats"])


def _whole_trainer(model):
  """(v, x, domain) -> v after one train-mode forward; one compile per static domain spec."""
  traced = jax.jit(lambda v, x, ids: model.apply(v, x, train=True, domain=ids, mutable=["batch_stats"])[1])
  static = jax.jit(lambda v, x, domain: model.apply(v, x, train=True, domain=domain, mutable=["batch_stats"])[1],
                   static_argnums=2)
  return lambda v, x, domain: {**v, **(traced if isinstance(domain, jax.Array) else static)(v, x, domain)}


@pytest.mark.parametrize("syn,real", [
    pytest.param(jnp.ones(4, jnp.int32), jnp.zeros(4, jnp.int32), id="ids"),
    pytest.param(1, 0, id="whole", marks=pytest.mark.slow),
    pytest.param((0, 4), (4, 0), id="split", marks=pytest.mark.slow)])
def test_whole_resnet_real_after_synthetic_equals_real_only(syn, real):
  """Every BN of a ResNet: a synthetic-only step leaves the real rows exactly as a real-only run."""
  model, params, stats = TINY.init(jax.random.key(0), num_classes=3, domains=("real", "synthetic"), image_size=32)
  v0 = {"params": params, "batch_stats": stats}
  x_real, x_syn = images(4, 32, seed=1), 3 + 2 * images(4, 32, seed=2)
  train = _whole_trainer(model)
  v_a, v_b = train(train(v0, x_syn, syn), x_real, real), train(v0, x_real, real)
  a, b, init = (weights.flatten(v["batch_stats"]) for v in (v_a, v_b, v0))
  assert len(a) == 2 * 12  # mean, var of 12 BNs: stem, 2 per block, 3 downsample shortcuts
  for k in a:
    np.testing.assert_array_equal(a[k][0], b[k][0], err_msg=k)
    assert not np.allclose(a[k][1], init[k][1]), k  # the synthetic row of every BN moved
    np.testing.assert_array_equal(b[k][1], init[k][1], err_msg=k)  # a real-only run never touches it


def _two_domain_variables(model, params, stats=None):
  """Makes domain 1 differ from domain 0 in every per-domain table (stats and affine)."""
  rng = np.random.default_rng(0)
  bump = lambda t, lo, hi: t.at[1].multiply(jnp.asarray(rng.uniform(lo, hi, t.shape[1:]), t.dtype))  # noqa: E731
  params = jax.tree.map(lambda t: bump(t, 0.5, 1.5) if t.ndim == 2 and t.shape[0] == 2 else t, params)
  if stats is not None:
    stats = jax.tree.map(lambda t: bump(t, 0.5, 1.5).at[1].add(0.1), stats)
  return params, stats


def test_resnet_export_one_domain_loads_in_torchvision():
  import torch
  import torchvision
  model, params, stats = TINY.init(jax.random.key(0), num_classes=3, domains=("real", "synthetic"),
                                   separate_affine=True, image_size=32)
  params, stats = _two_domain_variables(model, params, stats)
  x = images(2, 32, seed=4)
  tm = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3).eval()
  got = {}
  for d in (0, 1):
    sd = import_torch.resnet_to_torch(params, stats, domain=d)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
      got[d] = tm(torch_nhwc(x)).numpy()
    ours, _ = model.apply({"params": params, "batch_stats": stats}, x, domain=d)
    diff = float(np.max(np.abs(np.asarray(ours) - got[d])))
    print(f"resnet export domain={d}: torchvision vs ours max abs diff {diff:.2e}")
    assert diff <= 1e-4
  assert not np.allclose(got[0], got[1], atol=1e-3)


def test_vit_export_one_domain_loads_in_timm():
  import timm
  import torch
  tiny = dict(width=64, depth=2, mlp_dim=256, num_heads=2, patch_size=8)
  model, params, _ = vit.ViTVariant("S/16").init(jax.random.key(0), num_classes=4, domains=("real", "synthetic"),
                                                 separate_affine=True, image_size=32, **tiny)
  params, _ = _two_domain_variables(model, reinit_head(params, jax.random.key(1)))
  assert params["Transformer"]["encoder_norm"]["scale"].shape == (2, 64)
  tm = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=2,
                         num_heads=2, num_classes=4).eval()
  x = images(2, 32, seed=5)
  got = {}
  for d in (0, 1):
    sd = import_torch.vit_to_timm(params, domain=d)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
      got[d] = tm(torch_nhwc(x)).numpy()
    ours, _ = model.apply({"params": params}, x, domain=d)
    diff = float(np.max(np.abs(np.asarray(ours) - got[d])))
    print(f"vit export domain={d}: timm vs ours max abs diff {diff:.2e}")
    assert diff <= 1e-4
  assert not np.allclose(got[0], got[1], atol=1e-3)
