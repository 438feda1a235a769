"""big_vision / augreg .npz ViT files (written from a timm model in their own key layouts) vs timm."""
import numpy as np
import pytest

from synth_jax.errors import WeightsError
from synth_jax.models import vit
from tests.models.helpers import images, torch_nhwc
from tests.models.test_vit import TINY, _timm_vit


def _augreg_npz(sd, heads=2):
  """timm state_dict -> the google-research/vision_transformer (augreg) npz key layout."""
  sd = {k: v.numpy() for k, v in sd.items()}
  out = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
         "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
         "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
         "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
  for i in range(2):
    b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
    out[p + "LayerNorm_0/scale"], out[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
    out[p + "LayerNorm_2/scale"], out[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
    for j, fc in ((0, "fc1"), (1, "fc2")):
      out[p + f"MlpBlock_3/Dense_{j}/kernel"] = sd[b + f"mlp.{fc}.weight"].T
      out[p + f"MlpBlock_3/Dense_{j}/bias"] = sd[b + f"mlp.{fc}.bias"]
    w, bias = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
    d = w.shape[1]
    for n, name in enumerate(("query", "key", "value")):
      out[p + f"MultiHeadDotProductAttention_1/{name}/kernel"] = w[n * d:(n + 1) * d].T.reshape(d, heads, -1)
      out[p + f"MultiHeadDotProductAttention_1/{name}/bias"] = bias[n * d:(n + 1) * d].reshape(heads, -1)
    out[p + "MultiHeadDotProductAttention_1/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(heads, -1, d)
    out[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[b + "attn.proj.bias"]
  return out


def _big_vision_scanned(aug):
  """augreg layout -> big_vision's: posemb without the cls slot (folded into cls), scanned blocks."""
  out = {}
  pos = aug["Transformer/posembed_input/pos_embedding"]
  out["params/cls"] = aug["cls"] + pos[:, :1]
  out["params/pos_embedding"] = pos[:, 1:]
  blocks = {}
  for k, v in aug.items():
    if k.startswith("Transformer/encoderblock_"):
      i, rest = k.removeprefix("Transformer/encoderblock_").split("/", 1)
      rest = rest.replace("_1/", "_0/", 1) if rest.startswith("MultiHead") else rest
      rest = rest.replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0")
      blocks.setdefault(rest, {})[int(i)] = v
    elif k not in ("cls", "Transformer/posembed_input/pos_embedding"):
      out["params/" + k] = v
  for rest, per in blocks.items():
    out[f"params/Transformer/encoderblock/{rest}"] = np.stack([per[i] for i in sorted(per)])
  return out


@pytest.mark.parametrize("layout", ["augreg", "big_vision_scanned"])
def test_npz_matches_timm(tmp_path, layout):
  import torch
  tm = _timm_vit()
  aug = _augreg_npz(tm.state_dict())
  arrays = aug if layout == "augreg" else _big_vision_scanned(aug)
  path = str(tmp_path / "vit.npz")
  np.savez(path, **arrays)
  model, params, _ = vit.ViTVariant("S/16").from_big_vision(path, num_classes=10, **TINY)
  x = images(2, 32)
  logits, _ = model.apply({"params": params}, x)
  with torch.no_grad():
    ref = tm(torch_nhwc(x)).numpy()
  diff = float(np.max(np.abs(np.asarray(logits) - ref)))
  print(f"big_vision npz ({layout}) max abs diff {diff:.2e}")
  assert diff <= 1e-4
  model, params, _ = vit.ViTVariant("S/16").from_big_vision(path, num_classes=3, image_size=48, **TINY)
  assert params["pos_embedding"].shape == (1, 37, 64) and params["head"]["kernel"].shape == (64, 3)


def test_gap_checkpoint_refused(tmp_path):
  path = str(tmp_path / "gap.npz")
  np.savez(path, **{"embedding/kernel": np.zeros((8, 8, 3, 64), np.float32)})
  with pytest.raises(WeightsError, match="cls"):
    vit.ViTVariant("S/16").from_big_vision(path, num_classes=3, **TINY)
