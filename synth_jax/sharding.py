"""The one place that builds the device Mesh and the PartitionSpecs code shards with.

Axes are (data, fsdp, tensor). The batch is split over ("data", "fsdp"). Parameters are placed by
one logical-axis rule table (`RULES`, below): every dimension of every ResNet / ViT / CLIP / UNet /
VAE parameter gets a logical name, and `logical_shardings` maps names to mesh axes: "heads" and
"mlp" over "tensor" (Megatron-style tensor parallelism, as MaxDiffusion does), then the largest
preferred remaining name over "fsdp". DESIGN.md lists the table. Nothing else calls jax.devices()
to place arrays by hand.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from synth_jax.errors import MeshError

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(spec: Any, num_devices: int) -> tuple[int, int, int]:
  """Resolves {data, fsdp, tensor} sizes (one may be -1 = all remaining devices)."""
  sizes = [int(_get(spec, a, 1 if a != "data" else -1)) for a in AXES]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1:
    raise MeshError(f"mesh {dict(zip(AXES, sizes))}: only one axis may be -1")
  if any(s == 0 or s < -1 for s in sizes):
    raise MeshError(f"mesh {dict(zip(AXES, sizes))}: sizes must be positive or -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if free:
    if num_devices % fixed:
      raise MeshError(f"mesh {dict(zip(AXES, sizes))} needs a multiple of {fixed} devices, "
                      f"there are {num_devices}; change config.mesh")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise MeshError(f"mesh {dict(zip(AXES, sizes))} uses {math.prod(sizes)} devices, there are "
                    f"{num_devices}; set config.mesh so the sizes multiply to {num_devices} "
                    "(or use -1 for one axis)")
  return tuple(sizes)


def _get(spec, key, default):
  if spec is None:
    return default
  if isinstance(spec, dict) or hasattr(spec, "get"):
    v = spec.get(key, default)
    return default if v is None else v
  return getattr(spec, key, default)


def make_mesh(spec: Any = None, devices: Sequence[Any] | None = None) -> Mesh:
  """Builds the Mesh from config.mesh ({data, fsdp, tensor}); default: all devices on data.

  CPU devices have no interconnect topology, so they are laid out in order. On accelerators
  `mesh_utils` maps the axes onto the physical links; a shape it cannot map is a MeshError naming
  the shape (a silent reshape would put the tensor axis across slow links).
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(spec, len(devices))
  if devices[0].platform == "cpu":
    return Mesh(np.array(devices).reshape(shape), AXES)
  from jax.experimental import mesh_utils
  try:
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except (AssertionError, NotImplementedError, ValueError) as e:
    raise MeshError(f"mesh {dict(zip(AXES, shape))} cannot be laid out on {len(devices)} "
                    f"{devices[0].device_kind} devices ({e}); change config.mesh, e.g. put the "
                    "remaining devices on data with -1") from e
  return Mesh(grid, AXES)


def batch_spec(ndim: int = 1) -> P:
  """Leading (batch) dim over data+fsdp, the rest replicated."""
  return P(BATCH_AXES, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  return NamedSharding(mesh, batch_spec(ndim))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(mesh: Mesh, batch_size: int, what: str = "batch_size") -> None:
  n = data_parallel_size(mesh)
  if batch_size % n:
    raise MeshError(f"{what}={batch_size} does not divide over {n} data-parallel devices; "
                    f"use a multiple of {n}")


# (path regex, ndim) -> logical name of each dimension. First match wins; a tensor no rule covers
# gets all-None (replicated) names, and tests/models/test_sharding.py checks no model has one.
RULES = (
    # classifier heads (ResNet, ViT; CLIP's image projection)
    (r"(.*/)?head/kernel", 2, ("embed", "classes")),
    (r"(.*/)?head/bias", 1, ("classes",)),
    # MLPs: ViT MlpBlock, CLIP fc1/fc2, UNet GEGLU feed-forward (ff/net_0/proj, ff/net_2)
    (r".*(Dense_0|fc1|ff/net_0/proj)/kernel", 2, ("embed", "mlp")),
    (r".*(Dense_0|fc1|ff/net_0/proj)/bias", 1, ("mlp",)),
    (r".*(Dense_1|fc2|ff/net_2)/kernel", 2, ("mlp", "embed")),
    # ViT attention: per-head 3-D kernels
    (r".*/out/kernel", 3, ("heads", "head_dim", "embed")),
    (r".*/(query|key|value)/kernel", 3, ("embed", "heads", "head_dim")),
    (r".*/(query|key|value)/bias", 2, ("heads", "head_dim")),
    # CLIP text tower and UNet transformer blocks: fused-head 2-D projections, the H*hd side "heads"
    (r".*/(q_proj|k_proj|v_proj)/kernel", 2, ("embed", "heads")),
    (r".*/(q_proj|k_proj|v_proj)/bias", 1, ("heads",)),
    (r".*/out_proj/kernel", 2, ("heads", "embed")),
    (r".*/attn1/(to_q|to_k|to_v)/kernel", 2, ("embed", "heads")),
    (r".*/attn2/to_q/kernel", 2, ("embed", "heads")),
    (r".*/attn2/(to_k|to_v)/kernel", 2, ("context", "heads")),  # reads the text encoder's states
    (r".*/attn[12]/to_out_0/kernel", 2, ("heads", "embed")),
    # VAE mid-block attention is one head: splitting it would all-reduce every logit, so its inner
    # side has its own name that no rule sends to "tensor"
    (r".*attentions_\d+/(to_q|to_k|to_v)/kernel", 2, ("embed", "vae_attn")),
    (r".*attentions_\d+/to_out_0/kernel", 2, ("vae_attn", "embed")),
    # UNet: SD 2.x linear proj_in/proj_out (1x1 convs in SD 1.x), timestep MLP
    (r".*/(proj_in|proj_out)/kernel", 2, ("conv_in", "conv_out")),
    (r"(.*/)?time_embedding_linear_1/kernel", 2, ("embed", "time_embed")),
    (r"(.*/)?time_embedding_linear_2/kernel", 2, ("time_embed", "time_embed")),
    (r".*/time_emb_proj/kernel", 2, ("time_embed", "embed")),
    # SDXL: the text_time add-embedding MLP (pooled text + size/crop ids -> time embedding)
    (r"(.*/)?add_embedding_linear_1/kernel", 2, ("embed", "time_embed")),
    (r"(.*/)?add_embedding_linear_2/kernel", 2, ("time_embed", "time_embed")),
    # embeddings
    (r".*token_embedding/embedding", 2, ("vocab", "embed")),
    (r".*position_embedding/embedding", 2, ("seq", "embed")),
    (r"(.*/)?text_projection/kernel", 2, ("embed", "proj")),
    (r".*pos_embedding", 3, (None, "seq", "embed")),
    (r"(.*/)?cls", 3, (None, None, "embed")),
    # every conv (ResNet, ViT patch embedding, UNet, VAE)
    (r".*kernel", 4, ("conv_h", "conv_w", "conv_in", "conv_out")),
    (r".*/(scale|bias|mean|var)", 2, ("domain", "embed")),  # per-domain norm tables (D, C)
    (r".*", 1, ("embed",)),  # norms, BN statistics, remaining biases: the channel dim
)

# Logical names split over "tensor" (first one a tensor has, if divisible): attention heads and MLP
# hidden units, so each device holds a slice of every layer and XLA inserts the all-reduces.
TENSOR_NAMES = ("heads", "mlp")
# Logical names that may be split over "fsdp", in order of preference (a dim "tensor" already took
# is skipped).
FSDP_PREFERENCE = ("mlp", "conv_out", "embed", "classes", "heads")


def _path(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def axes_of(path: str, shape: Sequence[int]) -> tuple:
  """The logical names of one tensor's dims, by the first rule its 'a/b/c' path and rank match."""
  for pattern, ndim, names in RULES:
    if len(shape) == ndim and re.fullmatch(pattern, path):
      return names
  return (None,) * len(shape)


def logical_axes(tree: Any) -> Any:
  """A tree of tuples of logical names, one per dimension, matching `tree` (params or stats)."""
  return jax.tree_util.tree_map_with_path(lambda p, x: axes_of(_path(p), np.shape(x)), tree)


def spec_for(names: Sequence[Any], shape: Sequence[int], mesh: Mesh, *, fsdp: bool = True,
             min_size: int = 2**14) -> P:
  """The PartitionSpec of a tensor with logical `names`: tensor-parallel dims, then one fsdp dim."""
  spec = [None] * len(shape)
  t = mesh.shape["tensor"]
  if t > 1:
    for name in TENSOR_NAMES:
      dims = [i for i, a in enumerate(names) if a == name and shape[i] % t == 0]
      if dims:
        spec[dims[0]] = "tensor"
        break
  n = mesh.shape["fsdp"]
  if fsdp and n > 1 and math.prod(shape) >= min_size:
    for name in FSDP_PREFERENCE:
      dims = [i for i, a in enumerate(names)
              if a == name and spec[i] is None and shape[i] % n == 0]
      if dims:
        spec[dims[0]] = "fsdp"
        break
  while spec and spec[-1] is None:  # P(None, None) == P() in meaning, not in ==: use the short one
    spec.pop()
  return P(*spec)


def logical_shardings(tree: Any, mesh: Mesh, *, fsdp: bool = True, min_size: int = 2**14) -> Any:
  """NamedShardings for `tree` (arrays or ShapeDtypeStructs) by the rule table.

  `fsdp=False` keeps the fsdp axis out (weights replicated across it; tensor splits still apply).
  Tensors under `min_size` elements are not split over fsdp: gathering them costs more than it saves.
  """
  def one(p, x):
    shape = np.shape(x)
    return NamedSharding(mesh, spec_for(axes_of(_path(p), shape), shape, mesh, fsdp=fsdp,
                                        min_size=min_size))
  return jax.tree_util.tree_map_with_path(one, tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Host numpy batch (this process's part) -> global jax.Arrays sharded on the batch axes.

  On one process this is a device_put; on several, each process contributes its local rows.
  """
  def put(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, x.ndim)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(put, batch)


def shard_global_batch(batch: Any, mesh: Mesh) -> Any:
  """Like `shard_batch`, for a batch that every process computed whole (e.g. from (seed, step)).

  Each process hands over only the rows its own devices hold, so a pod sees the same global batch
  as one host would, whatever the device order.
  """
  if jax.process_count() == 1:
    return shard_batch(batch, mesh)
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim), lambda idx: x[idx])
  return jax.tree.map(put, batch)


def maybe_initialize_distributed(**kwargs) -> bool:
  """Starts jax.distributed on multi-process runs (a no-op on one host): `hosts.initialize`,
  which the CLI calls before anything touches a device. Kept for library users."""
  from synth_jax import hosts
  return hosts.initialize(**kwargs)


def is_main_process() -> bool:
  return jax.process_index() == 0
