"""ResNet vs torchvision: eval logits, train-mode BN statistics, import errors, export round trip."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax.errors import WeightsError
from synth_jax.models import resnet, weights
from synth_jax.models import import_torch
from tests.models.helpers import images, randomize_bn, torch_nhwc


def _torch_resnet(kind, num_classes=10):
  import torch
  import torchvision
  torch.manual_seed(0)
  if kind == "18":
    m = torchvision.models.resnet18(num_classes=num_classes)
  else:  # a one-block-per-stage bottleneck ResNet: the ResNet-50 block at test size
    m = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=num_classes)
  return randomize_bn(m).eval()


@pytest.mark.parametrize("kind,fmt", [("18", "pth"), ("bottleneck:1,1,1,1", "safetensors")])
def test_eval_logits_match_torchvision(tmp_path, kind, fmt):
  import torch
  tm = _torch_resnet("18" if kind == "18" else "b")
  path = str(tmp_path / f"r.{fmt}")
  if fmt == "pth":
    torch.save(tm.state_dict(), path)
  else:
    weights.write_safetensors(path, {k: v.numpy() for k, v in tm.state_dict().items()})
  model, params, stats = resnet.ResNetVariant(kind).from_torchvision(path, num_classes=10)
  x = images(2, 64)
  logits, out = jax.jit(model.apply)({"params": params, "batch_stats": stats}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  print(f"resnet {kind} eval max abs diff {diff:.2e}")
  assert diff <= 1e-4
  assert set(out) >= {"stem", "stage4", "pre_logits", "logits"}


def test_train_mode_bn_stats_match_torch(tmp_path):
  import torch
  tm = _torch_resnet("18")
  path = str(tmp_path / "r.pth")
  torch.save(tm.state_dict(), path)
  model, params, stats = resnet.resnet18.from_torchvision(path, num_classes=10)
  x = images(4, 32, seed=1)
  tm.train()  # torch momentum 0.1 == Flax-convention 0.9
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  (logits, _), upd = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
  assert float(np.max(np.abs(np.asarray(logits) - ref))) <= 1e-4
  ours = import_torch.resnet_to_torch(params, upd["batch_stats"])
  sd = tm.state_dict()
  worst = max(float(np.max(np.abs(ours[k] - sd[k].numpy()))) for k in sd if k.endswith(("running_mean", "running_var")))
  print(f"train-mode running stats max abs diff {worst:.2e}")
  assert worst <= 1e-5


def test_export_round_trip_loads_strict_in_torchvision(tmp_path):
  import torch
  import torchvision
  model, params, stats = resnet.resnet18.init(jax.random.key(0), num_classes=7, image_size=32)
  sd = {k: torch.from_numpy(np.array(v)) for k, v in import_torch.resnet_to_torch(params, stats).items()}
  tm = torchvision.models.resnet18(num_classes=7)
  tm.load_state_dict(sd, strict=True)
  tm.eval()
  x = images(2, 32, seed=2)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  logits, _ = model.apply({"params": params, "batch_stats": stats}, x)
  assert float(np.max(np.abs(np.asarray(logits) - ref))) <= 1e-4


def test_head_replaced_and_bad_tensors_named(tmp_path):
  import torch
  tm = _torch_resnet("18")
  sd = tm.state_dict()
  path = str(tmp_path / "r.pth")
  torch.save(sd, path)
  _, params, _ = resnet.resnet18.from_torchvision(path, num_classes=100)
  assert params["head"]["kernel"].shape == (512, 100)
  np.testing.assert_array_equal(params["head"]["bias"], 0)
  np.testing.assert_array_equal(params["conv1"]["kernel"], weights.conv_kernel(sd["conv1.weight"].numpy()))
  bad = dict(sd)
  del bad["layer2.0.bn1.running_var"]
  bad["layer3.0.conv1.weight"] = bad["layer3.0.conv1.weight"][:, :5]
  bad["extra.weight"] = torch.zeros(3)
  torch.save(bad, path)
  with pytest.raises(WeightsError) as e:
    resnet.resnet18.from_torchvision(path, num_classes=10)
  msg = str(e.value)
  assert "batch_stats/layer2_0/bn1/var" in msg and "extra.weight" in msg and "layer3_0/conv1/kernel" in msg
  with pytest.raises(WeightsError, match="head"):
    resnet.resnet18.from_torchvision(str(tmp_path / "r.pth"), num_classes=100, keep_head=True)


def test_bf16_compute_keeps_fp32_params_and_stats():
  model, params, stats = resnet.ResNetVariant("basic:1,1,1,1").init(jax.random.key(0), num_classes=5, image_size=32,
                                                                    dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  fwd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
  (logits, out), upd = fwd({"params": params, "batch_stats": stats}, images(2, 32))
  assert out["stage4"].dtype == jnp.bfloat16 and logits.dtype == jnp.float32
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(upd))
  assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.slow
def test_full_resnet50_matches_torchvision(tmp_path):
  import torch
  import torchvision
  torch.manual_seed(0)
  tm = randomize_bn(torchvision.models.resnet50(num_classes=10)).eval()
  path = str(tmp_path / "r50.safetensors")
  weights.write_safetensors(path, {k: v.numpy() for k, v in tm.state_dict().items()})
  model, params, stats = resnet.resnet50.from_torchvision(path, num_classes=10, domains=("real", "synthetic"))
  x = images(2, 32)
  logits, _ = jax.jit(model.apply)({"params": params, "batch_stats": stats}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  print(f"resnet50 (2 domains, eval) max abs diff {diff:.2e}")
  assert diff <= 1e-4
