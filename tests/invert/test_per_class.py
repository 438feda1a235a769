"""per_class inversion (DA-Fusion style) end to end: one token per class, class prompts, and the
per_class/ folder read by our loader, by diffusers and by the generate Sampler."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax import sharding
from synth_jax.data import digits
from synth_jax.diffusion import invert, invert_data, loading, sampler, textual_inversion
from synth_jax.models import clip_text, weights
from tests.diffusion_io import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs", "invert", "base.py")
STEPS = 2

GENERATE_BASE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "generate", "base.py")


@pytest.mark.slow
def test_per_class_trains_each_drawn_class_token_and_exports_a_loadable_folder(tmp_path):
  import diffusers
  root = tmp_path
  helpers.make_torch_pipeline(str(root / "sd"), seed=5)
  data_dir = digits.write_digits(str(root / "data"), size=16)
  # adam without weight decay: a token whose class no step drew gets a zero gradient and so
  # must stay bitwise at its start value
  cfg = config_lib.load_config(
      f"{BASE}:model={root / 'sd'},dataset={data_dir},shots=2,steps={STEPS},resolution=16,"
      "per_class=True",
      [f"workdir={root / 'w'}", "batch_size=8", "dtype=float32", "checkpoint_every=2",
       "preview_images=0", "optimizer=adam", "weight_decay=0.0", "learning_rate=0.05"])
  invert.invert(cfg)
  names = digits.CLASS_NAMES
  tokens = invert.tokens_for(cfg, names)
  learned = weights.read_tensors(str(root / "w" / "learned_embeds.safetensors"))
  assert sorted(learned) == sorted(tokens)
  assert json.loads((root / "w" / "per_class" / "tokens.json").read_text()) == dict(
      zip(names, tokens))

  # the prompts of every step name the class of their image (through its token)
  mesh = sharding.make_mesh(cfg.mesh)
  pipe = loading.load_pipeline(cfg.model_path, dtype=jnp.float32)
  original_table = np.asarray(weights.flatten(pipe.params["text_encoder"])[
      clip_text.TOKEN_EMBEDDING])
  data = invert_data.load(cfg, pipe, mesh, str(root / "w"))  # the run's cached latents
  inv = invert.Inverter(cfg, pipe, data, mesh)
  assert inv.tokens == tokens
  drawn = set()
  for step in range(STEPS):
    idx, _, _, tok = data.draw(int(cfg.seed), step, 8, inv.templates.shape[1])
    np.testing.assert_array_equal(tok, data.labels[idx])
    ids = np.asarray(inv.batch(step)[0])
    for row, c in zip(ids, tok):
      text = pipe.tokenizer.decode(row, skip_special_tokens=True)
      assert tokens[c] in text and names[c] in text, (text, names[c])
    drawn |= set(int(c) for c in tok)
  # each drawn class's token row moved from its class-name start; the others did not move at all
  assert 0 < len(drawn) < len(names), drawn  # both cases occur with this seed
  for c, tok in enumerate(tokens):
    moved = float(np.abs(learned[tok] - inv.init[c]).max())
    if c in drawn:
      assert moved > 1e-3, (names[c], moved)
    else:
      assert moved == 0.0, (names[c], moved)

  # per_class/: one file per token, read by our loader and by diffusers' load_textual_inversion
  files = sorted(str(p) for p in (root / "w" / "per_class").glob("*.safetensors"))
  assert len(files) == len(names)
  for c, f in enumerate(files):
    toks, vecs = textual_inversion.read_embeddings(f)
    assert toks == [tokens[c]]
    np.testing.assert_array_equal(vecs[0], learned[tokens[c]])
  pt = diffusers.StableDiffusionPipeline.from_pretrained(str(root / "sd"), safety_checker=None)
  pt.load_textual_inversion(files)
  pt_table = pt.text_encoder.get_input_embeddings().weight.detach().numpy()
  for tok in tokens:
    np.testing.assert_array_equal(pt_table[pt.tokenizer.convert_tokens_to_ids(tok)], learned[tok])

  # the generate stage's Sampler.from_config loads the folder (style_token_path=<workdir>/per_class)
  gen = config_lib.load_config(GENERATE_BASE, [
      f"model_path={cfg.model_path}", "dtype=float32", "batch_size=8", "steps=2", "resolution=16",
      f"style_token_path={root / 'w' / 'per_class'}"])
  s = sampler.Sampler.from_config(gen)
  table = np.asarray(weights.flatten(s.pipe.params["text_encoder"])[clip_text.TOKEN_EMBEDDING])
  np.testing.assert_array_equal(table[:len(original_table)], original_table)  # old rows as loaded
  for tok in tokens:
    np.testing.assert_array_equal(table[s.pipe.tokenizer.convert_tokens_to_ids(tok)], learned[tok])
  # and its text encoder reads class prompts as diffusers' does
  prompts = [f"a photo of a {tokens[3]}", f"a photo of a {tokens[7]} and a {tokens[0]}"]
  _, ref = helpers.torch_text_features(pt, prompts)
  ids = s.pipe.tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                         return_tensors="np").input_ids
  ours = s.pipe.text_encoder.apply({"params": s.pipe.params["text_encoder"]}, ids)
  diff = helpers.max_abs(ours["last_hidden_state"], ref)
  print(f"per_class: drawn classes {sorted(drawn)}; class-token prompts, Sampler text encoder vs "
        f"diffusers: max abs diff {diff:.2e}")
  assert diff <= 1e-4
