"""attention='splash' (Pallas TPU splash kernel, interpret mode on the CPU) vs the XLA path.

Forward and gradients (finetune and invert differentiate through attention), self- and
cross-attention (77 text tokens padded to the kernel's 128-key block, padded keys masked), head
dims padded to 128 lanes. Default suite: small shapes; the slow set: SD-1.5 / SDXL / VAE shapes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import sharding
from synth_jax.diffusion import attention
from synth_jax.diffusion import sampler
from synth_jax.diffusion import splash
from synth_jax.diffusion import tiny
from synth_jax.diffusion import unet as unet_lib
from synth_jax.diffusion import vae as vae_lib
from synth_jax.errors import ConfigError

FP32_TOL = 1e-5
BF16_TOL = 2e-2  # bf16 inputs/outputs (8-bit mantissa), O(1) values; both accumulate in fp32


def _qkv(b, tq, tk, heads, d, dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  draw = lambda t, s: jnp.asarray(rng.standard_normal((b, t, heads * d)) * s, dtype)  # noqa: E731
  return draw(tq, 1.0), draw(tk, 1.0), draw(tk, 1.0)


def _compare(b, tq, tk, heads, d, dtype=jnp.float32, grads=True):
  """max |splash - xla| of the outputs and of d(loss)/d(q, k, v), relative to each's max size."""
  q, k, v = _qkv(b, tq, tk, heads, d, dtype)
  w = jnp.asarray(np.random.default_rng(1).standard_normal((b, tq, heads * d)), jnp.float32)

  def loss(impl, q, k, v):  # a random projection of the output, so every output element counts
    return jnp.sum(attention.attend(q, k, v, heads, impl).astype(jnp.float32) * w)

  out = {impl: jax.jit(lambda q, k, v, i=impl: attention.attend(q, k, v, heads, i))(q, k, v)
         for impl in ("xla", "splash")}
  rel = lambda a, r: float(jnp.abs(a.astype(jnp.float32) - r.astype(jnp.float32)).max() /  # noqa
                           jnp.abs(r.astype(jnp.float32)).max())
  diffs = {"out": rel(out["splash"], out["xla"])}
  assert out["splash"].shape == out["xla"].shape and out["splash"].dtype == dtype
  if grads:
    g = {impl: jax.jit(jax.grad(lambda *a, i=impl: loss(i, *a), argnums=(0, 1, 2)))(q, k, v)
         for impl in ("xla", "splash")}
    diffs.update({n: rel(a, r) for n, a, r in zip("qkv", g["splash"], g["xla"])})
  print(f"splash vs xla ({tq}x{tk}, {heads}x{d}, {jnp.dtype(dtype).name}):",
        {n: f"{x:.1e}" for n, x in diffs.items()})
  return diffs


@pytest.mark.parametrize("tq,tk,d", [
    (24, 77, 40), pytest.param(24, 24, 8, marks=pytest.mark.slow),
    pytest.param(16, 7, 160, marks=pytest.mark.slow)], ids=["cross77-d40", "self", "cross7-d160"])
def test_fp32_forward_and_grads_match_xla(tq, tk, d):
  diffs = _compare(2, tq, tk, 2, d)
  assert max(diffs.values()) <= FP32_TOL  # measured <= 7e-7


def test_bf16_matches_xla_within_bound():
  diffs = _compare(2, 24, 77, 2, 40, jnp.bfloat16, grads=False)
  assert diffs["out"] <= BF16_TOL


def test_padded_keys_get_no_weight():
  """Keys past Tk (padding to the 128 block) must not be attended: splash on 77 keys equals XLA on
  the same 77 keys, and differs from XLA on the zero-padded 128 keys (which would get weight)."""
  q, k, v = _qkv(1, 8, 77, 1, 64)
  out = attention.attend(q, k, v, 1, "splash")
  np.testing.assert_allclose(out, attention.attend(q, k, v, 1, "xla"), atol=FP32_TOL)
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 128 - 77), (0, 0)))  # noqa: E731
  assert float(jnp.abs(out - attention.attend(q, pad(k), pad(v), 1, "xla")).max()) > 0.05


def test_padding_shapes():
  assert splash.padded_shape(77, 77, 40) == (128, 128, 128)
  assert splash.padded_shape(4096, 77, 160) == (4096, 128, 256)
  assert splash.padded_shape(1000, 64, 64) == (1024, 128, 128)


def test_sharded_over_the_mesh_batch_axes_matches():
  """Under jax.set_mesh the kernel runs per device on its batch slice (shard_map)."""
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  q, k, v = _qkv(8, 16, 7, 2, 8)
  fn = jax.jit(lambda q, k, v: attention.attend(q, k, v, 2, "splash"),
               in_shardings=sharding.batch_sharding(mesh, 3))
  with jax.set_mesh(mesh):
    text = fn.lower(q, k, v).as_text()
    out = fn(q, k, v)
  assert "shard_map" in text or "sdy.manual_computation" in text
  np.testing.assert_allclose(out, attention.attend(q, k, v, 2, "xla"), atol=FP32_TOL)


@pytest.mark.slow  # ~170 s on 2 busy cores: every attention layer compiles an interpreted kernel
def test_tiny_unet_and_vae_with_splash_match_xla():
  """Self-, cross- (77 tokens) and VAE mid-block attention inside the real modules."""
  cfg = tiny.tiny_configs(sample_size=8)
  rng = np.random.default_rng(0)
  unet = unet_lib.UNet2DConditionModel.from_config(cfg["unet"])
  params = unet.init_params(0)
  args = (jnp.asarray(rng.standard_normal((2, 8, 8, 4)), jnp.float32), jnp.array([10, 500]),
          jnp.asarray(rng.standard_normal((2, 77, 32)), jnp.float32))
  out = {i: jax.jit(unet.clone(attention_impl=i).apply)({"params": params}, *args)
         for i in ("xla", "splash")}
  unet_diff = float(jnp.abs(out["splash"] - out["xla"]).max())
  vae = vae_lib.AutoencoderKL.from_config(cfg["vae"])
  images = jnp.asarray(rng.uniform(-1, 1, (1, 16, 16, 3)), jnp.float32)
  vparams = jax.jit(vae.init)(jax.random.PRNGKey(0), images)["params"]
  rec = {i: jax.jit(vae.clone(attention_impl=i).apply)({"params": vparams}, images)
         for i in ("xla", "splash")}
  vae_diff = float(jnp.abs(rec["splash"] - rec["xla"]).max())
  print(f"tiny UNet splash vs xla {unet_diff:.1e}, tiny VAE {vae_diff:.1e}")
  assert unet_diff <= 1e-4 and vae_diff <= 1e-4  # whole networks, fp32


def test_auto_picks_splash_on_tpu_only(monkeypatch):
  assert sampler.attention_impl_for(jnp.bfloat16, "auto") == "xla"  # CPU here
  with pytest.raises(ConfigError, match=r"attention='splash' needs a TPU .*backend cpu"):
    sampler.attention_impl_for(jnp.bfloat16, "splash")
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert sampler.attention_impl_for(jnp.float32, "auto") == "splash"
  assert sampler.attention_impl_for(jnp.bfloat16, "splash") == "splash"


# SD-1.5 (heads 8, head dim 40/80/160 at 64x64/32x32/16x16/8x8 latents), SDXL (head dim 64 at
# 32x32 and 64x64 latents, 10/20 heads; 2 heads here: heads are independent), the VAE mid-block
# (one head of 512 at 64x64). Cross-attention: 77 text tokens.
SHAPES = [(4096, 4096, 8, 40), (4096, 77, 8, 40), (1024, 1024, 8, 80), (1024, 77, 8, 80),
          (256, 77, 8, 160), (64, 64, 8, 160), (1024, 1024, 2, 64), (4096, 77, 2, 64),
          (4096, 4096, 1, 512)]


@pytest.mark.slow
@pytest.mark.parametrize("tq,tk,heads,d", SHAPES,
                         ids=[f"{a}x{b}-h{c}d{e}" for a, b, c, e in SHAPES])
def test_sd_shapes_fp32_and_bf16(tq, tk, heads, d):
  diffs = _compare(1, tq, tk, heads, d, grads=tq * tk <= 1024 * 1024)
  assert max(diffs.values()) <= FP32_TOL
  assert _compare(1, tq, tk, heads, d, jnp.bfloat16, grads=False)["out"] <= BF16_TOL
