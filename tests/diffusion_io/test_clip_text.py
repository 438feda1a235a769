"""CLIP text encoder parity vs transformers (tiny random configs saved with save_pretrained)."""
import json
import os

import jax
import numpy as np
import pytest

from synth_jax.errors import WeightsError
from synth_jax.models import clip_text
from synth_jax.models import weights

TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, projection_dim=24)


def _hf_model(tmp_path, with_projection=False, **overrides):
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.CLIPTextConfig(**{**TINY, **overrides})
  cls = (transformers.CLIPTextModelWithProjection if with_projection
         else transformers.CLIPTextModel)
  model = cls(config).eval()
  with torch.no_grad():  # HF inits LayerNorm to (1, 0); perturb so the test sees scale/bias
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(tmp_path))
  return model


def _load_ours(path):
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  module = clip_text.CLIPTextModel.from_config(config)
  state = weights.read_tensors(os.path.join(path, "model.safetensors"))
  return module, clip_text.params_from_hf(state, config)


def _ids(eos):
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 90, size=(3, 12))
  ids[:, 0] = 1
  ids[0, 5:] = eos
  ids[1, 9:] = eos
  ids[2, -1] = eos
  return ids


@pytest.mark.parametrize("hidden_act,eos", [("quick_gelu", 2), ("gelu", 98)])
def test_matches_transformers(tmp_path, hidden_act, eos):
  import torch
  hf = _hf_model(tmp_path, hidden_act=hidden_act, eos_token_id=eos)
  module, params = _load_ours(str(tmp_path))
  ids = _ids(eos)
  with torch.no_grad():
    ref = hf(torch.tensor(ids), output_hidden_states=True)
  out = jax.jit(module.apply)({"params": params}, ids)
  diff = max(
      np.abs(np.asarray(out["last_hidden_state"]) - ref.last_hidden_state.numpy()).max(),
      np.abs(np.asarray(out["pooler_output"]) - ref.pooler_output.numpy()).max(),
      *(np.abs(np.asarray(a) - b.numpy()).max()
        for a, b in zip(out["hidden_states"], ref.hidden_states)))
  assert len(out["hidden_states"]) == len(ref.hidden_states) == 3
  print(f"clip text max abs diff ({hidden_act}, eos={eos}): {diff:.2e}")
  assert diff <= 1e-4


def test_projection_and_roundtrip(tmp_path):
  import torch
  import transformers
  hf = _hf_model(tmp_path, with_projection=True, eos_token_id=2)
  module, params = _load_ours(str(tmp_path))
  assert module.projection_dim == 24
  ids = _ids(2)
  mask = np.ones_like(ids)
  mask[0, 6:] = 0  # padding mask on keys, on top of the causal mask
  with torch.no_grad():
    ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask))
  out = module.apply({"params": params}, ids, attention_mask=mask)
  assert np.abs(np.asarray(out["text_embeds"]) - ref.text_embeds.numpy()).max() <= 1e-4
  assert np.abs(np.asarray(out["last_hidden_state"]) - ref.last_hidden_state.numpy()).max() <= 1e-4
  # Our export loads back into transformers with identical weights.
  back = clip_text.params_to_hf(params)
  ref_sd = {k: v.numpy() for k, v in hf.state_dict().items()}
  assert set(back) == set(ref_sd)
  for k in back:
    np.testing.assert_array_equal(back[k], ref_sd[k])
  # ...and through a file: transformers reads what we write.
  weights.write_safetensors(str(tmp_path / "model.safetensors"), back, {"format": "pt"})
  again = transformers.CLIPTextModelWithProjection.from_pretrained(str(tmp_path))
  with torch.no_grad():
    np.testing.assert_allclose(again(torch.tensor(ids), attention_mask=torch.tensor(mask)
                                     ).text_embeds.numpy(),
                               ref.text_embeds.numpy(), atol=1e-6)


def test_inputs_embeds_override_matches_edited_table():
  module = clip_text.CLIPTextModel(**{k: v for k, v in TINY.items() if k != "projection_dim"})
  params = module.init_params(seed=1)
  ids = _ids(2)
  new_row = np.random.default_rng(1).normal(size=32).astype(np.float32)
  table = params["embeddings"]["token_embedding"]["embedding"].copy()
  table[7] = new_row
  edited = jax.tree_util.tree_map(lambda x: x, params)
  edited["embeddings"]["token_embedding"]["embedding"] = table
  a = module.apply({"params": edited}, ids)["last_hidden_state"]
  b = module.apply({"params": params}, ids, inputs_embeds=table[ids])["last_hidden_state"]
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_misshaped_tensor_is_named(tmp_path):
  _hf_model(tmp_path)
  state = weights.read_tensors(str(tmp_path / "model.safetensors"))
  state["encoder.layers.1.mlp.fc1.weight"] = np.zeros((5, 32), np.float32)
  with pytest.raises(WeightsError, match="encoder/layers_1/mlp/fc1/kernel"):
    clip_text.params_from_hf(state, {**TINY})
