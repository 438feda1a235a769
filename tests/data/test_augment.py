"""Host transforms against torchvision's PIL path; colour modes; mixup/cutmix maths."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from synth_jax.data import augment, mixup


def _photo(w=61, h=47, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
  return Image.fromarray(base).resize((w, h), Image.BILINEAR)  # smooth-ish, like a photo


@pytest.mark.parametrize("size", [(61, 47), (40, 90)])
def test_eval_matches_torchvision_resize_center_crop(size):
  from torchvision import transforms as T
  img = _photo(*size)
  ours = augment.eval_image(img, 32, crop_pct=0.875)
  ref = np.asarray(T.Compose([T.Resize(int(32 / 0.875)), T.CenterCrop(32)])(img))
  assert ours.shape == (32, 32, 3)
  np.testing.assert_array_equal(ours, ref)


def test_resized_crop_matches_torchvision():
  from torchvision.transforms import functional as TF
  img = _photo()
  rng = np.random.default_rng(0)
  for _ in range(5):
    top, left, h, w = augment.random_resized_crop_box(rng, *img.size)
    assert 0 <= top and top + h <= img.size[1] and 0 <= left and left + w <= img.size[0]
    ours = np.asarray(augment.resized_crop(img, top, left, h, w, 24))
    ref = np.asarray(TF.resized_crop(img, top, left, h, w, [24, 24]))
    np.testing.assert_array_equal(ours, ref)


def test_crop_box_area_and_ratio_distribution():
  rng = np.random.default_rng(1)
  boxes = np.array([augment.random_resized_crop_box(rng, 500, 400) for _ in range(2000)])
  area = boxes[:, 2] * boxes[:, 3] / (500 * 400)
  ratio = boxes[:, 3] / boxes[:, 2]
  assert area.min() >= 0.07 and area.max() <= 1.0 and 0.45 < area.mean() < 0.6
  assert ratio.min() > 0.7 and ratio.max() < 1.4


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA"])
def test_color_modes_become_rgb(mode):
  img = _photo().convert(mode)
  buf = io.BytesIO()
  img.save(buf, format="JPEG" if mode in ("L", "CMYK") else "PNG")
  out = augment.train_image(buf.getvalue(), np.random.default_rng(0), 16, color_jitter_strength=0.4,
                            randaugment_ops=2)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_jpeg_draft_decode_stays_close_to_full_decode():
  img = _photo(640, 480)
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=95)
  fast = augment.eval_image(buf.getvalue(), 64).astype(float)
  full = augment.eval_image(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), 64).astype(float)
  assert np.abs(fast - full).mean() < 4.0  # DCT-scaled decode vs full decode + resize


def test_truncated_jpeg_raises():
  buf = io.BytesIO()
  _photo().save(buf, format="JPEG")
  with pytest.raises(Exception):
    augment.train_image(buf.getvalue()[:200], np.random.default_rng(0), 16)


def test_mixup_mixes_pixels_and_targets_with_one_lambda():
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
  y = jnp.arange(8) % 5
  mixed, t, lam = jax.jit(mixup.mixup, static_argnums=(3, 4))(jax.random.key(1), x, y, 0.4, 5)
  np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)
  # Every output is lam * x_i + (1 - lam) * x_j for the j whose target carries weight 1 - lam.
  for i in range(8):
    partner = [j for j in range(8) if np.allclose(mixed[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)]
    assert partner, i
  assert 0 < lam < 1


def test_cutmix_target_weight_equals_pasted_area():
  x = jnp.stack([jnp.full((16, 16, 1), float(i)) for i in range(4)])
  y = jnp.arange(4)
  mixed, t, lam = mixup.cutmix(jax.random.key(3), x, y, 1.0, 4)
  for i in range(4):
    kept = float((mixed[i] == i).mean())
    assert abs(kept - float(lam)) < 1e-6 or (float(t[i, i]) == 1.0 and kept == 1.0)
    np.testing.assert_allclose(float(t[i].sum()), 1.0, rtol=1e-6)
  images, targets = jax.jit(mixup.mix_batch, static_argnums=(3, 4, 5, 6))(
      jax.random.key(0), x, y, 4, 0.2, 1.0, 0.5)
  assert images.shape == x.shape and targets.shape == (4, 4)
  same, t0 = mixup.mix_batch(jax.random.key(0), x, y, 4)  # alpha 0: identity
  np.testing.assert_array_equal(same, x)
  np.testing.assert_array_equal(t0, jax.nn.one_hot(y, 4))


@pytest.mark.parametrize("segments,hosts", [((4,), 2), ((2,), 4), ((3, 1), 2), ((2, 2), 4)])
def test_mixing_on_several_hosts_pairs_rows_as_one_process(segments, hosts):
  """The N-process global batch is the one-process batch reordered (host p: rows p::N of each
  stream, hosts stacked); with host_order, Mixup and CutMix make the same pairs (issue 18)."""
  n = sum(segments) * hosts
  rng = np.random.default_rng(0)
  one = rng.standard_normal((n, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 5, n)
  stream_starts = np.cumsum((0,) + tuple(s * hosts for s in segments))
  rows = [stream_starts[k] + i * hosts + p for p in range(hosts)
          for k, seg in enumerate(segments) for i in range(seg)]  # the pipeline's layout
  canon, _ = mixup.host_order(segments, hosts)
  np.testing.assert_array_equal(canon, rows)
  order = mixup.host_order(segments, hosts)
  key = jax.random.PRNGKey(3)
  for mix in (lambda x, y, o: mixup.mixup(key, x, y, 0.4, 5, o)[:2],
              lambda x, y, o: mixup.cutmix(key, x, y, 1.0, 5, o)[:2]):
    want_x, want_t = mix(one, labels, None)
    got_x, got_t = mix(one[canon], labels[canon], order)
    np.testing.assert_allclose(np.asarray(got_x), np.asarray(want_x)[canon], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_t), np.asarray(want_t)[canon], rtol=0, atol=1e-6)
    plain_x, _ = mix(one[canon], labels[canon], None)  # without it the pairs differ
    assert not np.allclose(np.asarray(plain_x), np.asarray(want_x)[canon])
  assert mixup.host_order((4,), 1) is None
