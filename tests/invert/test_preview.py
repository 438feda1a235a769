"""The inversion's preview contact sheet (images generated with the learned token)."""
import io
import os

import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax.diffusion import invert, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs", "invert", "base.py")


@pytest.mark.slow
def test_preview_contact_sheet_is_a_png_grid_of_the_generated_images(tmp_path):
  from PIL import Image
  tiny.make_tiny_pipeline(str(tmp_path / "sd"), seed=3)
  cfg = config_lib.load_config(f"{BASE}:model={tmp_path / 'sd'},resolution=16",
                               [f"workdir={tmp_path / 'w'}", "dtype=float32", "preview_images=5",
                                "preview_steps=2"])
  os.makedirs(tmp_path / "w")
  rng = np.random.default_rng(0)
  vector = rng.standard_normal(32).astype(np.float32)  # the tiny text encoder's width
  invert._preview(cfg, str(tmp_path / "w"), [cfg.token], vector[None])
  raw = (tmp_path / "w" / "preview_contact_sheet.png").read_bytes()
  assert raw[:8] == b"\x89PNG\r\n\x1a\n"
  Image.open(io.BytesIO(raw)).verify()  # checksums of every chunk
  sheet = Image.open(io.BytesIO(raw))
  assert sheet.format == "PNG" and sheet.mode == "RGB"
  assert sheet.size == (4 * 16, 2 * 16)  # 5 images: 4 columns, 2 rows of 16 px tiles
  px = np.asarray(sheet)
  tiles = [px[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] for r in range(2) for c in range(4)]
  assert all(t.std() > 1 for t in tiles[:5])  # generated images, not blank tiles
  assert not tiles[5].any() and not tiles[6].any() and not tiles[7].any()  # unused cells
  # each cell has its own seed, so no two images are the same
  assert len({t.tobytes() for t in tiles[:5]}) == 5
