"""Textual inversion files: ours load in diffusers (and theirs in ours) with equal text features."""
import os

import numpy as np
import pytest

from synth_jax.diffusion import loading
from synth_jax.diffusion import textual_inversion as ti
from synth_jax.errors import WeightsError
from synth_jax.models import clip_text
from tests.diffusion_io import helpers


@pytest.fixture(scope="module")
def torch_sd(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ti") / "sd")
  return path, helpers.make_torch_pipeline(path)


def _ours_text_side(path):
  """Tokenizer + text encoder from a diffusers folder (no UNet/VAE needed)."""
  import json
  tokenizer, _ = loading.load_tokenizer(os.path.join(path, "tokenizer"))
  with open(os.path.join(path, "text_encoder", "config.json")) as f:
    config = json.load(f)
  state, source = loading.read_component_weights(os.path.join(path, "text_encoder"), "text_encoder")
  return tokenizer, clip_text.CLIPTextModel.from_config(config), clip_text.params_from_hf(
      state, config, source)


def _encode(tokenizer, module, params, prompts):
  prompts = ti.maybe_convert_prompt(prompts, tokenizer)
  ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                  truncation=True, return_tensors="np").input_ids
  rows = params["embeddings"]["token_embedding"]["embedding"].shape[0]
  module = module.clone(vocab_size=rows)  # linen checks the table's shape against the module
  return ids, np.asarray(module.apply({"params": params}, ids)["last_hidden_state"])


@pytest.mark.parametrize("n_vectors", [1, 3])
def test_saved_embeds_load_in_diffusers_and_match(torch_sd, tmp_path, n_vectors):
  import copy

  import torch
  path, pt = torch_sd
  pt = copy.deepcopy(pt)  # each case adds its own token
  vec = np.random.default_rng(n_vectors).normal(size=(n_vectors, 32)).astype(np.float32)
  file = str(tmp_path / ti.FILE_NAME)
  ti.save_learned_embeds(file, {"<sks>": vec if n_vectors > 1 else vec[0]})
  pt.load_textual_inversion(file)
  tokenizer, module, params = _ours_text_side(path)
  tokens = ti.add_tokens(tokenizer, params, *ti.read_embeddings(file))
  prompts = ["a photo of <sks>", "a <sks> painting of the dog"]
  ids, ours = _encode(tokenizer, module, tokens, prompts)
  pt_ids = pt.tokenizer(pt.maybe_convert_prompt(prompts, pt.tokenizer), padding="max_length",
                        max_length=77, truncation=True, return_tensors="pt").input_ids
  np.testing.assert_array_equal(ids, pt_ids.numpy())
  assert ids.max() == len(tokenizer) - 1  # the new token is used
  with torch.no_grad():
    ref = pt.text_encoder(pt_ids).last_hidden_state.numpy()
  assert helpers.max_abs(ours, ref) <= 1e-4


def test_loads_a1111_style_file_and_checks_dim(torch_sd, tmp_path):
  path, _ = torch_sd
  tokenizer, _, params = _ours_text_side(path)
  vec = np.ones((2, 32), np.float32)
  from synth_jax.models import weights
  weights.write_safetensors(str(tmp_path / "x.safetensors"), {"emb_params": vec})
  with pytest.raises(WeightsError, match="token="):
    ti.read_embeddings(str(tmp_path / "x.safetensors"))
  tokens, vectors = ti.read_embeddings(str(tmp_path / "x.safetensors"), token="<x>")
  assert tokens == ["<x>", "<x>_1"]
  new = ti.add_tokens(tokenizer, params, tokens, vectors)
  table = new["embeddings"]["token_embedding"]["embedding"]
  np.testing.assert_array_equal(table[-2:], vec)
  with pytest.raises(WeightsError, match="already in the tokenizer"):
    ti.add_tokens(tokenizer, new, tokens, vectors)
  with pytest.raises(WeightsError, match=r"needs \(32,\)"):
    ti.add_tokens(tokenizer, new, ["<y>"], [np.ones(16, np.float32)])


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_prompt_embeds_match_diffusers_encode_prompt(torch_sd, clip_skip):
  import torch
  path, pt = torch_sd
  tokenizer, module, params = _ours_text_side(path)
  prompts = ["a photo of the cat", "a sketch"]
  ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                  return_tensors="np").input_ids
  if clip_skip is None:
    ref, _ = pt.encode_prompt(prompts, torch.device("cpu"), 1, False)
  else:
    # diffusers 0.42's encode_prompt(clip_skip=) reaches for text_encoder.text_model, which
    # transformers 5 removed; this is its formula, written against the transformers 5 model.
    with torch.no_grad():
      hidden = pt.text_encoder(torch.tensor(ids), output_hidden_states=True).hidden_states
      ref = pt.text_encoder.final_layer_norm(hidden[-(clip_skip + 1)])
  ours = module.apply({"params": params}, ids, clip_skip=clip_skip or 0)["prompt_embeds"]
  assert helpers.max_abs(ours, ref.detach().numpy()) <= 1e-4
