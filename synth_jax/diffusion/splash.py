"""Pallas TPU splash attention for the UNet and VAE: padding to the kernel's blocks, masking.

JAX ships two Pallas TPU attention kernels. The older `flash_attention` has no interpret mode in
this JAX (so nothing of it can be checked off a TPU) and pads nothing itself; `splash_attention`
takes `interpret=True`, segment ids (which mask padded keys) and separate block sizes for the
backward kernels, so it is the one used here, as MaxDiffusion does.

The kernel wants sequence lengths that are multiples of its blocks (multiples of 128 lanes) and
works in (heads, T, head_dim) tiles whose last dim the TPU lays out in 128 lanes. SD's shapes are
neither: 77 text tokens, 64x64=4096 / 8x8=64 latent positions, head dims 40/64/80/160 (SD-1.5,
SDXL) and 512 (the VAE's one head). So:
  * queries are padded to the query block; padded rows attend to the real keys (segment 1) and are
    sliced off, so no row is ever fully masked (no 0/0 in the forward, no stray gradient);
  * keys/values are padded to the key block; padded keys get segment id 0, so they get exactly
    zero weight (the kernel's mask value underflows to 0 after the max subtraction);
  * head dims are zero-padded to a multiple of 128: zeros add nothing to q.k, and the padded
    output columns (zero value columns) are sliced off. The softmax scale 1/sqrt(d) uses the true
    d and is folded into q, because the splash kernel does not scale.
Off a TPU the kernel runs in Pallas' interpret mode (slow; for tests).

Sharding: a Pallas call is opaque to XLA's SPMD partitioner, which would gather the whole batch
onto every device. When a mesh is set (`jax.set_mesh`, done by the sampler), the call is wrapped in
`shard_map` over the mesh's batch axes, so each device runs the kernel on its own batch slice.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from synth_jax import sharding

LANES = 128
MAX_BLOCK = 512  # MaxDiffusion's SD default; larger blocks trade VMEM for fewer grid steps


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def block_size(length: int) -> int:
  """The kernel block for a sequence: the padded length up to MAX_BLOCK, a multiple of 128."""
  return min(MAX_BLOCK, _round_up(length, LANES))


def padded_shape(tq: int, tk: int, d: int) -> tuple[int, int, int]:
  """(Tq, Tk, D) after padding to the kernel's blocks (see the module docstring)."""
  return (_round_up(tq, block_size(tq)), _round_up(tk, block_size(tk)), _round_up(d, LANES))


def _kernel(heads: int, tq: int, tk: int, bq: int, bkv: int, interpret: bool):
  """A splash kernel for one padded shape. Not cached: it holds jnp arrays made under the current
  trace (a cached one leaks tracers into the next jit)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  mask = sm.MultiHeadMask([sm.FullMask((tq, tk)) for _ in range(heads)])
  blocks = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv,
                         block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
                         block_q_dq=bq, block_kv_dq=bkv)
  return sk.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                            interpret=interpret)


def _local(q, k, v, interpret: bool):
  """Splash attention on (B, T, H, D) arrays of one device; returns (B, Tq, H, D)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  b, tq, heads, d = q.shape
  tk = k.shape[1]
  tq_p, tk_p, d_p = padded_shape(tq, tk, d)
  scale = 1.0 / math.sqrt(d)
  q = (q.astype(jnp.float32) * scale).astype(q.dtype)

  def pad(x, t):  # (B, T, H, D) -> (B, H, t, d_p)
    x = jnp.pad(x, ((0, 0), (0, t - x.shape[1]), (0, 0), (0, d_p - d)))
    return x.transpose(0, 2, 1, 3)

  q, k, v = pad(q, tq_p), pad(k, tk_p), pad(v, tk_p)
  segments = sk.SegmentIds(q=jnp.ones((b, tq_p), jnp.int32),
                           kv=jnp.broadcast_to(jnp.arange(tk_p) < tk, (b, tk_p)).astype(jnp.int32))
  kernel = _kernel(heads, tq_p, tk_p, block_size(tq), block_size(tk), interpret)
  out = jax.vmap(kernel)(q, k, v, segments)
  return out.transpose(0, 2, 1, 3)[:, :tq, :, :d]


def splash_attention(q, k, v, interpret: bool | None = None):
  """softmax(q k^T / sqrt(D)) v with the Pallas splash kernel; q (B, Tq, H, D), k/v (B, Tk, H, D).

  `interpret` None: interpret mode unless running on a TPU. Shards over the batch axes of the
  mesh set with `jax.set_mesh` when the batch divides over them.
  """
  if interpret is None:
    interpret = jax.default_backend() != "tpu"
  fn = functools.partial(_local, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  axes = () if mesh.empty else tuple(a for a in sharding.BATCH_AXES
                                     if a in mesh.axis_names and mesh.shape[a] > 1)
  n = math.prod(mesh.shape[a] for a in axes) if axes else 1
  if axes and q.shape[0] % n == 0:
    spec = P(axes)
    fn = jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
                       check_vma=False)
  return fn(q, k, v)
