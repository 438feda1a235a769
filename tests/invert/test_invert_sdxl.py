"""DSI on SDXL: the token trains in both text encoders and exports diffusers' clip_l/clip_g file."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax import sharding
from synth_jax.data import digits
from synth_jax.diffusion import invert, invert_data, invert_xl, loading
from synth_jax.diffusion import sampler as sampler_lib
from synth_jax.diffusion import textual_inversion, token_check
from synth_jax.models import weights
from tests.diffusion_models.sdxl_helpers import make_torch_sdxl, max_abs
from tests.invert.test_invert import BASE

TABLE = "embeddings/token_embedding/embedding"
ENCODERS = ("text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("inv_xl")
  pt = make_torch_sdxl(str(root / "xl"), seed=3)
  return root, digits.write_digits(str(root / "data"), size=16), pt


def _config(root, data, workdir):
  return config_lib.load_config(
      f"{BASE}:model={root / 'xl'},dataset={data},shots=1,steps=3,resolution=16",
      [f"workdir={workdir}", "batch_size=8", "dtype=float32", "preview_images=0",
       "learning_rate=0.05"])


def _embeds(model, file, prompts):
  """(diffusers' prompt embeds + pooled, ours) with `file` loaded into each."""
  import diffusers
  import torch
  ref = diffusers.StableDiffusionXLPipeline.from_pretrained(model)
  state = weights.read_tensors(file)  # diffusers' documented two calls, one per encoder
  token = weights.safetensors_metadata(file)["token"]
  ref.load_textual_inversion(torch.from_numpy(state["clip_l"]), token=token,
                             text_encoder=ref.text_encoder, tokenizer=ref.tokenizer)
  ref.load_textual_inversion(torch.from_numpy(state["clip_g"]), token=token,
                             text_encoder=ref.text_encoder_2, tokenizer=ref.tokenizer_2)
  with torch.no_grad():
    want, _, pooled, _ = ref.encode_prompt(prompts, do_classifier_free_guidance=False)
  pipe = loading.load_pipeline(model)
  assert textual_inversion.load_textual_inversion(pipe, file) == [token]  # generate's call
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  s = sampler_lib.Sampler(pipe, mesh, batch_size=len(prompts), num_steps=1, height=16, width=16)
  context, added = s._encode(s.params, s.tokenize(prompts))
  return (np.concatenate([want.numpy().reshape(len(prompts), -1), pooled.numpy()], 1),
          np.concatenate([np.asarray(context).reshape(len(prompts), -1),
                          np.asarray(added["text_embeds"])], 1))


@pytest.mark.slow
def test_sdxl_token_trains_in_both_encoders_and_loads_in_diffusers(setup, tmp_path):
  root, data, _ = setup
  model = str(root / "xl")
  cfg = _config(root, data, tmp_path / "w")
  original = loading.load_pipeline(model).params
  mesh = sharding.make_mesh(cfg.mesh)
  pipe = loading.load_pipeline(model)
  inv = invert.Inverter(cfg, pipe, invert_data.load(cfg, pipe, mesh, str(cfg.workdir)), mesh)
  emb, opt = inv.init_state()
  for step in range(3):
    emb, opt, loss = inv.step(emb, opt, step)
  assert np.isfinite(float(loss)) and inv.compiles == 1
  emb = jax.device_get(emb)
  moved = {k: float(np.abs(emb[k] - inv.init[k]).max()) for k in ENCODERS}
  assert all(v > 1e-4 for v in moved.values()), moved  # both token rows trained
  # every other weight bitwise as loaded: UNet, both encoders (old table rows too), VAE
  frozen = {**jax.device_get(inv.frozen), "vae": pipe.params["vae"]}
  for name in ("unet", "vae") + ENCODERS:
    now, then = weights.flatten(frozen[name]), weights.flatten(original[name])
    assert now.keys() == then.keys(), name
    for k, v in then.items():
      if k == TABLE:
        assert now[k].shape[0] == v.shape[0] + 1  # one new row in each table
        np.testing.assert_array_equal(now[k][:len(v)], v, err_msg=f"{name}/{k}")
        np.testing.assert_array_equal(now[k][len(v):], inv.init[name])
      else:
        np.testing.assert_array_equal(now[k], v, err_msg=f"{name}/{k}")
  # the export: diffusers' two load_textual_inversion calls and our loader agree, and the
  # learned rows move both the same way (vs the same file at the start values)
  token = inv.tokens[0]
  learned, start = str(tmp_path / "learned.safetensors"), str(tmp_path / "start.safetensors")
  invert_xl.save(learned, token, {k: v[0] for k, v in emb.items()})
  invert_xl.save(start, token, {k: v[0] for k, v in inv.init.items()})
  assert set(weights.read_tensors(learned)) == {"clip_l", "clip_g"}
  assert token_check.loaded_tokens(learned) == [token]
  prompts = [f"a photo in the style of {token}", "a dog"]
  ref_l, ours_l = _embeds(model, learned, prompts)
  ref_s, ours_s = _embeds(model, start, prompts)
  parity = max(max_abs(ours_l, ref_l), max_abs(ours_l - ours_s, ref_l - ref_s))
  change = float(np.abs(ref_l - ref_s)[0].max())
  print(f"SDXL DSI: rows moved {moved}; prompt embeds ours vs diffusers {parity:.1e}; the "
        f"learned rows change them by {change:.3f}")
  assert parity <= 1e-5 and change > 1e-3
  np.testing.assert_array_equal(ref_l[1], ref_s[1])  # a prompt without the token: unchanged


@pytest.mark.slow
def test_sdxl_token_gradients_match_diffusers_training_forward(setup, tmp_path):
  """Both rows' gradients vs PyTorch through textual_inversion_sdxl.py's forward: penultimate
  states of both encoders side by side, pooled projection of encoder 2, time ids (r, r, 0, 0, r, r)."""
  import diffusers
  import torch
  root, data, pt = setup
  cfg = _config(root, data, tmp_path / "g")
  mesh = sharding.make_mesh(cfg.mesh)
  pipe = loading.load_pipeline(str(root / "xl"))
  inv = invert.Inverter(cfg, pipe, invert_data.load(cfg, pipe, mesh, str(cfg.workdir)), mesh)
  rng = np.random.default_rng(0)
  ids = inv.templates[0, :2]
  latents = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  noise = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  t = np.array([10, 700])
  emb = {k: v + 0.01 * rng.standard_normal(v.shape).astype(np.float32) for k, v in inv.init.items()}
  grad = jax.grad(inv.denoising_loss)(emb, inv.frozen, ids, latents, noise, t)
  ids_1, ids_2 = invert_xl.split_ids(pipe, ids)
  tables = []
  for name in ENCODERS:
    te, tok_id = getattr(pt, name), int(inv.token_ids[name][0])
    te.resize_token_embeddings(tok_id + 1)
    table = te.get_input_embeddings().weight
    with torch.no_grad():
      table[tok_id] = torch.from_numpy(emb[name][0])
    table.requires_grad_(True)
    tables.append((table, tok_id))
  out_1 = pt.text_encoder(torch.from_numpy(ids_1.astype(np.int64)), output_hidden_states=True)
  out_2 = pt.text_encoder_2(torch.from_numpy(ids_2.astype(np.int64)), output_hidden_states=True)
  context = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
  time_ids = torch.tensor([[16.0, 16, 0, 0, 16, 16]] * 2)
  ddpm = diffusers.DDPMScheduler.from_config(pt.scheduler.config)
  n = torch.from_numpy(noise.transpose(0, 3, 1, 2))
  noisy = ddpm.add_noise(torch.from_numpy(latents.transpose(0, 3, 1, 2)), n, torch.from_numpy(t))
  pred = pt.unet(noisy, torch.from_numpy(t), context,
                 added_cond_kwargs={"text_embeds": out_2[0], "time_ids": time_ids}).sample
  torch.mean((pred - n) ** 2).backward()
  diffs = {}
  for name, (table, tok_id) in zip(ENCODERS, tables):
    ref = table.grad[tok_id].numpy()
    assert np.abs(ref).max() > 1e-6, name  # the comparison is not between zeros
    diffs[name] = float(max_abs(np.asarray(grad[name])[0], ref) / np.abs(ref).max())
  print(f"SDXL token-row gradients vs PyTorch, max abs diff / max |grad|: {diffs}")
  assert all(v <= 1e-4 for v in diffs.values()), diffs


@pytest.mark.slow
def test_sdxl_invert_stage_resumes_previews_and_generate_loads(setup, tmp_path):
  """The whole stage on SDXL: checkpoints (both rows), a resume, the preview through our SDXL
  sampler, and the exported file as generate's `style_token_path`."""
  import os
  from synth_jax.diffusion import generate
  root, data, _ = setup
  cfg = _config(root, data, tmp_path / "e2e")
  cfg.steps, cfg.checkpoint_every, cfg.preview_images, cfg.preview_steps = 2, 1, 1, 2
  out = invert.invert(cfg)
  assert os.path.isfile(tmp_path / "e2e" / "preview_contact_sheet.png")
  first = weights.read_tensors(out)
  assert {k: v.shape for k, v in first.items()} == {"clip_l": (1, 32), "clip_g": (1, 24)}
  os.remove(out)  # as if killed before the export: the rerun restores step 2 and re-exports
  cfg.preview_images = 0
  assert invert.invert(cfg) == out
  for k, v in weights.read_tensors(out).items():
    np.testing.assert_array_equal(v, first[k])
  gen = config_lib.load_config(os.path.join(os.path.dirname(BASE), "..", "generate", "base.py"),
                               [f"model_path={root / 'xl'}", f"style_token_path={out}",
                                "batch_size=8", "steps=1", "resolution=16", "dtype=float32"])
  s = generate._default_sampler(gen)
  assert s.pipe.tokenizer_2.convert_tokens_to_ids(cfg.token) == len(s.pipe.tokenizer_2) - 1
  token_check.check_prompt_tokens([f"a photo in the style of {cfg.token}"], s.pipe.tokenizer,
                                  token_check.loaded_tokens(out))
