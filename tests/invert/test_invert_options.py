"""Inversion options without a model: optimizer choice (vs torch.optim), crop, config errors."""
import io
import os

import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax.diffusion import invert, invert_data, invert_state
from synth_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs", "invert", "base.py")


def _cfg(*overrides):
  return config_lib.load_config(BASE, list(overrides))


@pytest.mark.parametrize("name,momentum", [("adamw", 0.0), ("adam", 0.0), ("sgd", 0.0),
                                           ("sgd", 0.9)])
def test_optimizer_matches_torch_optim(name, momentum):
  """4 steps on the same (3, 32) rows and gradients as torch.optim.AdamW / Adam / SGD."""
  import optax
  import torch
  lr, wd = 0.05, 0.1
  cfg = _cfg(f"optimizer={name}", f"learning_rate={lr}", f"weight_decay={wd}",
             f"momentum={momentum}")
  rng = np.random.default_rng(0)
  init = rng.standard_normal((3, 32)).astype(np.float32)
  grads = rng.standard_normal((4, 3, 32)).astype(np.float32)
  tx = invert_state.make_optimizer(cfg)
  emb, opt = jnp.asarray(init), tx.init(jnp.asarray(init))
  for g in grads:
    upd, opt = tx.update(jnp.asarray(g), opt, emb)
    emb = optax.apply_updates(emb, upd)
  p = torch.nn.Parameter(torch.from_numpy(init.copy()))
  ref_opt = {"adamw": lambda: torch.optim.AdamW([p], lr=lr, weight_decay=wd),
             "adam": lambda: torch.optim.Adam([p], lr=lr, weight_decay=wd),
             "sgd": lambda: torch.optim.SGD([p], lr=lr, weight_decay=wd, momentum=momentum)}[name]()
  for g in grads:
    p.grad = torch.from_numpy(g.copy())
    ref_opt.step()
  diff = float(np.abs(np.asarray(emb) - p.detach().numpy()).max())
  moved = float(np.abs(np.asarray(emb) - init).max())
  print(f"{name} momentum={momentum}: max abs diff vs torch.optim {diff:.2e} (moved {moved:.2e})")
  # float32 rounding differs by op order (measured <= 1.5e-6); coupled vs decoupled decay would
  # differ by ~lr * wd * |emb| = 1e-2
  assert diff <= 1e-5
  assert moved > 1e-2  # the comparison is not between two unmoved tensors


@pytest.mark.parametrize("override,message", [
    ("optimizer=lion", r"optimizer='lion' is not one of \['adamw', 'adam', 'sgd'\]"),
    ("momentum=1.0", r"momentum=1.0 must be in \[0, 1\)"),
    ("weight_decay=-0.1", r"weight_decay=-0.1 must be >= 0"),
])
def test_bad_optimizer_config_is_one_line(override, message):
  cfg = _cfg(override)
  with pytest.raises(ConfigError, match=message) as e:
    invert.validate(cfg)
  assert "\n" not in str(e.value) and "--config." in str(e.value)


def test_center_crop_must_be_a_bool():
  with pytest.raises(ConfigError, match="center_crop.* expects a bool"):
    _cfg("center_crop=maybe")
  cfg = _cfg()
  with cfg.unlocked():
    del cfg["center_crop"]
    cfg.center_crop = 1  # a Python config that wrote 1 for True
  with pytest.raises(ConfigError, match=r"center_crop=1 must be True or False; pass e.g. "):
    invert.validate(cfg)


@pytest.mark.parametrize("size", [(40, 20), (20, 48)])
def test_crop_options_match_torchvision(size):
  """center_crop=True == Resize(r) + CenterCrop(r); False == Resize((r, r)) (aspect not kept)."""
  from PIL import Image
  from torchvision import transforms
  rng = np.random.default_rng(1)
  pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  r, bicubic = 16, transforms.InterpolationMode.BICUBIC
  im = Image.fromarray(pixels)
  ref = {True: transforms.Compose([transforms.Resize(r, bicubic), transforms.CenterCrop(r)])(im),
         False: transforms.Resize((r, r), bicubic)(im)}
  out = {}
  for crop in (True, False):
    out[crop] = invert_data.load_image(buf.getvalue(), r, center_crop=crop)
    want = np.asarray(ref[crop], np.float32) / 127.5 - 1.0
    assert out[crop].shape == (r, r, 3)
    np.testing.assert_array_equal(out[crop], want)
  assert np.abs(out[True] - out[False]).max() > 0.1  # the option changes the pixels


def test_latent_cache_of_other_crop_settings_is_refused(tmp_path):
  """latents.npz remembers how it was made: a rerun with center_crop flipped is refused."""
  cfg = _cfg("dataset=digits", f"workdir={tmp_path}")
  mean = np.zeros((2, 1, 2, 2, 4), np.float32)
  buf = io.BytesIO()
  np.savez(buf, mean=mean, std=mean + 1, labels=np.array([0, 1]), class_names=np.array(["a", "b"]),
           settings=np.array(invert_data._settings(cfg)))
  (tmp_path / "latents.npz").write_bytes(buf.getvalue())
  data = invert_data.load(cfg, None, None, str(tmp_path))  # same settings: cached, no VAE needed
  assert data.class_names == ["a", "b"] and data.mean.shape == mean.shape
  with pytest.raises(ConfigError, match=r"latents.npz was encoded with .*\"center_crop\": true.*"
                                        r"not .*\"center_crop\": false.*new --config.workdir"):
    invert_data.load(_cfg("dataset=digits", "center_crop=False"), None, None, str(tmp_path))


def test_per_class_tokens_carry_class_names():
  cfg = _cfg("per_class=True")
  assert invert.tokens_for(cfg, ["golden retriever", "Boeing 747-400", "?"]) == [
      "<dataset-style-0-golden_retriever>", "<dataset-style-1-boeing_747_400>", "<dataset-style-2>"]
  assert invert.tokens_for(_cfg(), ["a", "b"]) == ["<dataset-style>"]
