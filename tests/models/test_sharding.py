"""Logical axes, fsdp shardings, and a sharded forward/train step on 8 fake devices == unsharded."""
import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import sharding
from synth_jax.models import logical_axes, logical_shardings, reinit_head, resnet, vit, weights
from tests.models.helpers import images


def test_resnet_sharded_train_forward_equals_unsharded():
  model, params, stats = resnet.ResNetVariant("basic:1,1,1,1").init(
      jax.random.key(0), num_classes=8, domains=("real", "synthetic"), image_size=32)
  x = images(8, 32)
  split = (4, 4)

  def fwd(params, stats, x):
    (logits, _), upd = model.apply({"params": params, "batch_stats": stats}, x, train=True, domain=split,
                                   mutable=["batch_stats"])
    return logits, upd["batch_stats"]

  ref_logits, ref_stats = jax.jit(fwd)(params, stats, x)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  p_sh = logical_shardings(params, mesh, min_size=1024)
  assert any(s.spec != jax.sharding.PartitionSpec() for s in jax.tree.leaves(p_sh))
  params_s = jax.device_put(params, p_sh)
  stats_s = jax.device_put(stats, sharding.replicated(mesh))
  x_s = sharding.shard_batch(x, mesh)
  logits, new_stats = jax.jit(fwd)(params_s, stats_s, x_s)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), new_stats, ref_stats)


def test_vit_sharded_forward_equals_unsharded():
  model, params, _ = vit.ViTVariant("S/16").init(jax.random.key(0), num_classes=8, image_size=32, width=64, depth=2,
                                                  mlp_dim=256, num_heads=2, patch_size=8)
  x = images(8, 32)
  ref, _ = jax.jit(model.apply)({"params": params}, x)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8})
  params_s = jax.device_put(params, logical_shardings(params, mesh, min_size=1024))
  out, _ = jax.jit(model.apply)({"params": params_s}, sharding.shard_batch(x, mesh))
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_logical_axes_name_every_dim_and_reinit_head():
  _, params, stats = resnet.ResNetVariant("bottleneck:1,1,1,1").init(jax.random.key(0), num_classes=8, image_size=32)
  axes = weights.flatten(logical_axes(params))
  assert axes["layer1_0/conv2/kernel"] == ("conv_h", "conv_w", "conv_in", "conv_out")
  assert axes["head/kernel"] == ("embed", "classes")
  flat = weights.flatten(params)
  assert all(len(axes[k]) == v.ndim for k, v in flat.items())
  _, vparams, _ = vit.ViTVariant("S/16").init(jax.random.key(0), num_classes=8, image_size=32, width=64, depth=1,
                                               mlp_dim=256, num_heads=2, patch_size=8)
  vaxes = weights.flatten(logical_axes(vparams))
  assert vaxes["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"] == (
      "embed", "heads", "head_dim")
  assert vaxes["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"] == ("embed", "mlp")
  new = reinit_head(params, jax.random.key(1), num_classes=5)
  assert new["head"]["kernel"].shape == (2048, 5)
  assert float(jnp.max(jnp.abs(new["head"]["kernel"]))) <= 1 / np.sqrt(2048)
  assert new["conv1"] is params["conv1"]
  assert not np.allclose(reinit_head(params, jax.random.key(2))["head"]["kernel"], params["head"]["kernel"])
