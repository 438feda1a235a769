"""`synth-jax invert` as 2 jax.distributed processes == one process over the same global devices.

Every process builds the whole batch of step s from (seed, s) and feeds its own devices' rows, so
both runs compute the same per-example losses; only the mean's cross-device sum runs in another
order (gloo across processes vs XLA in one), so the exported token agrees to float32 rounding,
carried through 6 Adam(W) steps: |diff| <= 1e-5 (measured: 0, bitwise equal)."""
import numpy as np
import pytest

from synth_jax.data import digits
from synth_jax.models import weights
from tests.invert.test_invert import BASE
from tests.multihost import harness


def _args(root, data, workdir):
  return ["invert", "--config", f"{BASE}:model={root / 'sd'},dataset={data},shots=2,steps=6,resolution=16",
          f"--config.workdir={workdir}", "--config.batch_size=8", "--config.dtype=float32",
          "--config.checkpoint_every=2", "--config.preview_images=0"]


def test_invert_two_processes_token_equal_within_rounding(tmp_path):
  from synth_jax.diffusion import tiny
  tiny.make_tiny_pipeline(str(tmp_path / "sd"), seed=5)
  data = digits.write_digits(str(tmp_path / "data"), size=16)
  harness.run(_args(tmp_path, data, tmp_path / "many"), 2, 2)
  harness.run(_args(tmp_path, data, tmp_path / "one"), 1, 4)
  got = weights.read_tensors(str(tmp_path / "many" / "learned_embeds.safetensors"))
  want = weights.read_tensors(str(tmp_path / "one" / "learned_embeds.safetensors"))
  assert got.keys() == want.keys()
  worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
  print(f"invert x2: largest token difference {worst:.3g}")
  for k in want:
    np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=0)
