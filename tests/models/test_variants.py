"""Every named variant at its real widths vs its reference (torchvision / timm / transformers), strict load.

Small inputs keep these cheap: ResNets at 64 px, ViTs built by timm at 32 px (our position embedding
then has 1 + 2*2 rows, the shape timm's img_size override gives).
"""
import jax
import numpy as np
import pytest

from synth_jax.errors import WeightsError
from synth_jax.models import resnet, vit, weights
from tests.models.helpers import images, randomize_bn, torch_nhwc


def _save(tm, path):
  weights.write_safetensors(path, {k: v.numpy() for k, v in tm.state_dict().items()})
  return path


def _resnet_parity(tm, variant, path, size=64, load="from_torchvision"):
  import torch
  model, params, stats = getattr(variant, load)(path, num_classes=10)
  x = images(2, size)
  logits, _ = jax.jit(model.apply)({"params": params, "batch_stats": stats}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  return float(np.max(np.abs(np.asarray(logits) - ref)))


@pytest.mark.slow
@pytest.mark.parametrize("depth", ["34", "101"])
def test_resnet34_101_match_torchvision(tmp_path, depth):
  import torch
  import torchvision
  torch.manual_seed(0)
  tm = randomize_bn(getattr(torchvision.models, f"resnet{depth}")(num_classes=10), residual_gain=0.2).eval()
  path = str(tmp_path / "r.pth")
  torch.save(tm.state_dict(), path)
  diff = _resnet_parity(tm, resnet.ResNetVariant(depth), path)
  print(f"resnet{depth} (torchvision .pth, 64 px) eval max abs diff {diff:.2e}")
  assert diff <= 1e-4


@pytest.mark.parametrize("name,variant,kw", [("resnet18", resnet.resnet18, {}),
                                             ("resnet50", resnet.ResNetVariant("bottleneck:1,1,1,1"),
                                              {"layers": (1, 1, 1, 1)})])
def test_timm_resnet_matches(tmp_path, name, variant, kw):
  """timm's ResNet uses torchvision's key names and stride placement; its hub files are safetensors."""
  import timm
  import torch
  torch.manual_seed(0)
  tm = randomize_bn(timm.create_model(name, pretrained=False, num_classes=10, **kw)).eval()
  diff = _resnet_parity(tm, variant, _save(tm, str(tmp_path / "t.safetensors")), load="from_timm")
  print(f"timm {name} {kw} eval max abs diff {diff:.2e}")
  assert diff <= 1e-4


def test_timm_deep_stem_resnet_is_refused_by_name(tmp_path):
  """resnet18d (3-conv stem, avg-pool shortcut) has other math: an error naming its tensors, not a load."""
  import timm
  tm = timm.create_model("resnet18d", pretrained=False, num_classes=10)
  path = _save(tm, str(tmp_path / "d.safetensors"))
  with pytest.raises(WeightsError) as e:
    resnet.resnet18.from_timm(path, num_classes=10)
  assert "conv1.0.weight" in str(e.value) and "params/conv1/kernel" in str(e.value)


def test_hf_bare_resnet_model_features_match(tmp_path):
  """A bare ResNetModel folder (no classifier): the backbone loads, the head is new, features match."""
  import torch
  from transformers import ResNetConfig, ResNetModel
  torch.manual_seed(0)
  cfg = ResNetConfig(depths=[1, 1, 1, 1], layer_type="basic", hidden_sizes=[64, 128, 256, 512], embedding_size=64)
  tm = randomize_bn(ResNetModel(cfg)).eval()
  tm.save_pretrained(str(tmp_path))
  model, params, stats = resnet.ResNetVariant("basic:1,1,1,1").from_hf(str(tmp_path), num_classes=6)
  assert params["head"]["kernel"].shape == (512, 6)
  np.testing.assert_array_equal(params["head"]["bias"], 0)
  x = images(2, 64)
  _, out = model.apply({"params": params, "batch_stats": stats}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).pooler_output.numpy()[:, :, 0, 0]
  diff = float(np.max(np.abs(np.asarray(out["pre_logits"]) - ref)))
  print(f"hf bare ResNetModel pooled features max abs diff {diff:.2e}")
  assert diff <= 1e-4


def _timm_vit(name, img_size=32, num_classes=10):
  import timm
  import torch
  torch.manual_seed(0)
  m = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=num_classes)
  with torch.no_grad():  # timm zero-inits the head and some biases; make every tensor matter
    for p in m.parameters():
      p.add_(torch.randn_like(p) * 0.02)
  return m.eval()


def _vit_parity(tm, variant, path):
  import torch
  model, params, _ = variant.from_timm(path, num_classes=10)
  x = images(2, 32)
  logits, _ = jax.jit(model.apply)({"params": params}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  return float(np.max(np.abs(np.asarray(logits) - ref))), params


@pytest.mark.slow
def test_vit_s16_real_widths_match_timm(tmp_path):
  tm = _timm_vit("vit_small_patch16_224")
  diff, params = _vit_parity(tm, vit.vit_s16, _save(tm, str(tmp_path / "s16.safetensors")))
  print(f"vit_s16 (timm, 32 px) eval max abs diff {diff:.2e}")
  assert params["pos_embedding"].shape == (1, 5, 384) and len(params["Transformer"]) == 13
  assert diff <= 1e-4


@pytest.mark.slow
def test_vit_l16_real_widths_match_timm(tmp_path):
  import torch
  tm = _timm_vit("vit_large_patch16_224")
  path = str(tmp_path / "l16.pth")
  torch.save(tm.state_dict(), path)
  diff, params = _vit_parity(tm, vit.vit_l16, path)
  print(f"vit_l16 (timm .pth, 32 px) eval max abs diff {diff:.2e}")
  assert params["pos_embedding"].shape == (1, 5, 1024) and len(params["Transformer"]) == 25
  assert diff <= 1e-4
