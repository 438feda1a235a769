"""Hugging Face ResNetModel / ViTModel folders vs transformers (random tiny configs, save_pretrained)."""
import numpy as np
import pytest

from synth_jax.errors import WeightsError
from synth_jax.models import resnet, vit
from tests.models.helpers import images, randomize_bn, torch_nhwc


def test_hf_resnet_classifier_matches(tmp_path):
  import torch
  from transformers import ResNetConfig, ResNetForImageClassification
  torch.manual_seed(0)
  cfg = ResNetConfig(depths=[1, 1, 1, 1], layer_type="bottleneck", hidden_sizes=[256, 512, 1024, 2048],
                     embedding_size=64, num_labels=6)
  tm = randomize_bn(ResNetForImageClassification(cfg)).eval()
  tm.save_pretrained(str(tmp_path))
  model, params, stats = resnet.ResNetVariant("bottleneck:1,1,1,1").from_hf(str(tmp_path), num_classes=6)
  x = images(2, 64)
  logits, _ = model.apply({"params": params, "batch_stats": stats}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).logits.numpy()
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  print(f"hf resnet eval max abs diff {diff:.2e}")
  assert diff <= 1e-4


def test_hf_vit_model_and_classifier_match(tmp_path):
  import torch
  from transformers import ViTConfig, ViTForImageClassification, ViTModel
  torch.manual_seed(0)
  cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                  image_size=32, patch_size=8, num_labels=4)
  tiny = dict(width=64, depth=2, mlp_dim=256, num_heads=2, patch_size=8)
  clf = ViTForImageClassification(cfg).eval()
  clf.save_pretrained(str(tmp_path / "clf"))
  x = images(2, 32)
  model, params, _ = vit.ViTVariant("S/16").from_hf(str(tmp_path / "clf"), num_classes=4, **tiny)
  logits, out = model.apply({"params": params}, x)
  with torch.no_grad():
    ref = clf(pixel_values=torch_nhwc(x)).logits.numpy()
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  print(f"hf vit eval max abs diff {diff:.2e}")
  assert diff <= 1e-4
  bare = ViTModel(cfg, add_pooling_layer=True).eval()
  bare.save_pretrained(str(tmp_path / "bare"))
  model, params, _ = vit.ViTVariant("S/16").from_hf(str(tmp_path / "bare"), num_classes=4, **tiny)
  _, out = model.apply({"params": params}, x)
  with torch.no_grad():
    feats = bare(pixel_values=torch_nhwc(x)).last_hidden_state[:, 0].numpy()
  np.testing.assert_allclose(out["pre_logits"], feats, atol=1e-4)
  assert params["head"]["kernel"].shape == (64, 4)
  with pytest.raises(WeightsError, match="config.json"):
    vit.ViTVariant("S/16").from_hf(str(tmp_path), num_classes=4, **tiny)
