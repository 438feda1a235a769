"""The rule table (sharding.py): every dim named, fsdp and tensor shardings, sharded forward == unsharded."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from synth_jax import sharding
from synth_jax.diffusion import tiny
from synth_jax.diffusion import unet as unet_lib
from synth_jax.diffusion import vae as vae_lib
from synth_jax.models import CLIPVisionModel, clip_text, reinit_head, resnet, vit
from synth_jax.models import weights
from synth_jax.sharding import logical_axes, logical_shardings
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
  # Sharded BN reductions sum in another order, and train-mode BN (E[x^2] - mean^2) amplifies that
  # to ~1.4e-5 on these logits (~0.06); a sharding bug moves them by about their own size.
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
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


def _axis_sizes(tree):
  """{logical name: set of sizes it labels}, after checking every dim of size > 1 is named."""
  axes, flat = weights.flatten(logical_axes(tree)), weights.flatten(tree)
  sizes = collections.defaultdict(set)
  for k, v in flat.items():
    assert len(axes[k]) == len(v.shape), k
    for name, n in zip(axes[k], v.shape):
      assert name is not None or n == 1, f"{k} {v.shape} {axes[k]}"
      sizes[name].add(n)
  return sizes


# A small CLIP tower with every size distinct, so a wrong name shows up as a size clash.
_CLIP_VIS = CLIPVisionModel(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                            image_size=24, patch_size=8, projection_dim=20)


def test_clip_towers_and_per_domain_models_name_every_dim():
  vis = _axis_sizes(_CLIP_VIS.shapes())
  assert vis["embed"] == {48} and vis["mlp"] == {80} and vis["heads"] == {4} and vis["head_dim"] == {12}
  assert vis["classes"] == {20} and vis["seq"] == {10}  # the projection; 1 + 3*3 tokens
  vaxes = weights.flatten(logical_axes(_CLIP_VIS.shapes()))
  assert vaxes["Transformer/encoderblock_1/MultiHeadDotProductAttention_0/query/kernel"] == (
      "embed", "heads", "head_dim")
  assert vaxes["pre_norm/scale"] == ("embed",) and vaxes["head/kernel"] == ("embed", "classes")
  text = clip_text.CLIPTextModel.from_config(dict(vocab_size=99, hidden_size=32, intermediate_size=56,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  max_position_embeddings=13, projection_dim=24),
                                             with_projection=True)
  tsizes = _axis_sizes(text.shapes())
  assert tsizes["embed"] == {32} and tsizes["mlp"] == {56} and tsizes["vocab"] == {99}
  assert tsizes["seq"] == {13} and tsizes["proj"] == {24} and tsizes["heads"] == {32}  # fused H*hd side
  taxes = weights.flatten(logical_axes(text.shapes()))
  assert taxes["encoder/layers_0/self_attn/q_proj/kernel"] == ("embed", "heads")
  assert taxes["encoder/layers_0/self_attn/out_proj/kernel"] == ("heads", "embed")
  _, vp, _ = vit.ViTVariant("S/16").init(jax.random.key(0), num_classes=7, domains=("real", "synthetic"),
                                         separate_affine=True, image_size=16, width=48, depth=1, mlp_dim=80,
                                         num_heads=4, patch_size=8)
  vsizes = _axis_sizes(vp)
  assert vsizes["domain"] == {2} and vsizes["embed"] == {48} and vsizes["mlp"] == {80} and vsizes["classes"] == {7}
  _, rp, rs = resnet.ResNetVariant("basic:1,1,1,1").init(jax.random.key(0), num_classes=7,
                                                         domains=("real", "synthetic"), separate_affine=True,
                                                         image_size=16)
  assert _axis_sizes(rp)["domain"] == {2} and _axis_sizes(rs)["domain"] == {2}


def test_clip_vision_is_the_vit_and_shards_on_fsdp():
  params = jax.tree.map(jnp.asarray, _CLIP_VIS.init_params(seed=3))
  x = images(8, 24)
  ref = jax.jit(_CLIP_VIS.apply)({"params": params}, x)["image_embeds"]
  as_vit, _ = jax.jit(_CLIP_VIS.to_vit().apply)({"params": params}, x)
  np.testing.assert_array_equal(as_vit, ref)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8})
  p_sh = logical_shardings(params, mesh, min_size=512)
  spec = p_sh["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"].spec
  assert spec == jax.sharding.PartitionSpec(None, "fsdp")  # the mlp side, as for any ViT
  out = jax.jit(_CLIP_VIS.apply)({"params": jax.device_put(params, p_sh)}, sharding.shard_batch(x, mesh))
  np.testing.assert_allclose(out["image_embeds"], ref, atol=1e-5)


def _tiny_diffusion(overrides=None):
  configs = tiny.tiny_configs()
  ucfg = {k: v for k, v in configs["unet"].items() if not k.startswith("_")}
  ucfg.update(overrides or {})
  unet = unet_lib.UNet2DConditionModel.from_config(ucfg)
  vae = vae_lib.AutoencoderKL.from_config({k: v for k, v in configs["vae"].items() if not k.startswith("_")})
  return unet, vae


def _specs(shardings):
  return {k: s.spec for k, s in weights.flatten(shardings).items()}


@pytest.mark.parametrize("overrides", [None, {"use_linear_projection": True}], ids=["sd1", "sd2"])
def test_unet_and_vae_name_every_dim(overrides):
  unet, vae = _tiny_diffusion(overrides)
  ushapes = unet.abstract_params()
  usizes = _axis_sizes(ushapes)
  uaxes = weights.flatten(logical_axes(ushapes))
  blk = "down_blocks_0/attentions_0/transformer_blocks_0/"
  assert uaxes[blk + "attn1/to_q/kernel"] == ("embed", "heads")
  assert uaxes[blk + "attn2/to_k/kernel"] == ("context", "heads")
  assert uaxes[blk + "attn2/to_out_0/kernel"] == ("heads", "embed")
  assert uaxes[blk + "ff/net_0/proj/kernel"] == ("embed", "mlp")
  assert uaxes[blk + "ff/net_2/kernel"] == ("mlp", "embed")
  assert uaxes["down_blocks_0/resnets_0/time_emb_proj/kernel"] == ("time_embed", "embed")
  assert usizes["context"] == {32} and usizes["time_embed"] == {128}
  vaxes = weights.flatten(logical_axes(vae.abstract_params()))
  _axis_sizes(vae.abstract_params())
  assert vaxes["encoder/mid_block/attentions_0/to_q/kernel"] == ("embed", "vae_attn")
  assert vaxes["decoder/conv_in/kernel"] == ("conv_h", "conv_w", "conv_in", "conv_out")


@pytest.mark.slow  # two UNet compiles (~15 s unloaded); the CLIP-text test below covers the rule in the default run
def test_tensor_parallel_unet_forward_equals_unsharded():
  """mesh data=2 x tensor=4: heads and MLP units split 4 ways; XLA's collectives give the same output."""
  unet, _ = _tiny_diffusion()
  params = jax.tree.map(jnp.asarray, unet.init_params(0))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  t = np.array([999, 17], np.int32)
  ctx = rng.standard_normal((2, 7, 32)).astype(np.float32)
  ref = jax.jit(unet.apply)({"params": params}, x, t, ctx)
  mesh = sharding.make_mesh({"data": 2, "tensor": 4})
  p_sh = logical_shardings(params, mesh, fsdp=False)
  specs = _specs(p_sh)
  blk = "down_blocks_0/attentions_0/transformer_blocks_0/"
  assert specs[blk + "attn1/to_q/kernel"] == P(None, "tensor")
  assert specs[blk + "attn1/to_out_0/kernel"] == P("tensor")
  assert specs[blk + "ff/net_0/proj/kernel"] == P(None, "tensor")
  assert specs[blk + "ff/net_2/kernel"] == P("tensor")
  assert specs["conv_in/kernel"] == P()  # convs are not tensor-split
  params_s = jax.device_put(params, p_sh)
  assert len(params_s["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["attn1"]["to_q"]["kernel"]
             .addressable_shards[0].data.shape) == 2
  out = jax.jit(unet.apply)({"params": params_s}, sharding.shard_batch(x, mesh), sharding.shard_batch(t, mesh),
                            sharding.shard_batch(ctx, mesh))
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_tensor_parallel_text_forward_equals_unsharded():
  rng = np.random.default_rng(0)
  mesh = sharding.make_mesh({"data": 2, "tensor": 4})
  text = clip_text.CLIPTextModel.from_config(dict(vocab_size=99, hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  max_position_embeddings=13))
  tparams = jax.tree.map(jnp.asarray, text.init_params(1))
  ids = rng.integers(0, 99, (2, 13)).astype(np.int32)
  tref = jax.jit(text.apply)({"params": tparams}, ids)["last_hidden_state"]
  t_sh = logical_shardings(tparams, mesh)
  assert _specs(t_sh)["encoder/layers_0/self_attn/q_proj/kernel"] == P(None, "tensor")
  tout = jax.jit(text.apply)({"params": jax.device_put(tparams, t_sh)}, sharding.shard_batch(ids, mesh))
  np.testing.assert_allclose(tout["last_hidden_state"], tref, atol=1e-5)


def test_tensor_and_fsdp_take_different_dims():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  tree = {"MlpBlock_0": {"Dense_0": {"kernel": jax.ShapeDtypeStruct((256, 512), jnp.float32)}}}
  assert _specs(logical_shardings(tree, mesh))["MlpBlock_0/Dense_0/kernel"] == P("fsdp", "tensor")
  assert _specs(logical_shardings(tree, mesh, fsdp=False))["MlpBlock_0/Dense_0/kernel"] == P(None, "tensor")


def test_design_md_documents_every_logical_name_and_no_heuristic_remains():
  import pathlib
  root = pathlib.Path(sharding.__file__).parent.parent
  text = (root / "DESIGN.md").read_text()
  names = {n for _, _, ns in sharding.RULES for n in ns if n is not None}
  assert not [n for n in sorted(names) if f"`{n}`" not in text]
  # one policy: nothing places parameters by a largest-dimension heuristic any more
  assert not hasattr(sharding, "param_shardings") and not hasattr(sharding, "param_spec")


def test_pretrained_weights_go_from_the_host_straight_to_their_shards(tmp_path, monkeypatch):
  """from_torchvision(place=...) device_puts each host tensor to its sharding: no leaf is first
  made a whole array on one device (the old load_flat ran jnp.asarray over the tree)."""
  import torch
  import torchvision
  torch.manual_seed(0)
  tm = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1],
                                        num_classes=10)
  path = str(tmp_path / "r.pth")
  torch.save(tm.state_dict(), path)
  variant = resnet.ResNetVariant("basic:1,1,1,1")
  _, ref, ref_stats = variant.from_torchvision(path, num_classes=10)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  place = lambda tree: logical_shardings(tree, mesh, min_size=1024)  # noqa: E731
  whole, asarray = [], jnp.asarray
  monkeypatch.setattr(jnp, "asarray", lambda x, *a, **k: (  # host tensors made whole arrays
      whole.append(x.shape) if isinstance(x, np.ndarray) else None) or asarray(x, *a, **k))
  _, params, stats = variant.from_torchvision(path, num_classes=10, place=place)
  assert whole == []
  want = place({"params": params, "batch_stats": stats})["params"]
  got = jax.tree.map(lambda x: x.sharding, params)
  assert got == want and any(s.spec != P() for s in jax.tree.leaves(got))
  jax.tree.map(np.testing.assert_array_equal, params, ref)
  jax.tree.map(np.testing.assert_array_equal, stats, ref_stats)
