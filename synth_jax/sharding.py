"""The one place that builds the device Mesh and the PartitionSpecs code shards with.

Axes are (data, fsdp, tensor). The batch is split over ("data", "fsdp"); parameters are replicated
or split over "fsdp" along their largest divisible dimension. Nothing else calls jax.devices() to
place arrays by hand.
"""
from __future__ import annotations

import math
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
  """Builds the Mesh from config.mesh ({data, fsdp, tensor}); default: all devices on data."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(spec, len(devices))
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # CPU / odd topologies: a plain reshape is fine
    grid = np.array(devices).reshape(shape)
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


def param_spec(shape: Sequence[int], mesh: Mesh, fsdp: bool = True, min_size: int = 2**14) -> P:
  """Splits the largest dimension divisible by the fsdp size; small or indivisible tensors replicate."""
  n = mesh.shape["fsdp"]
  if not fsdp or n == 1 or math.prod(shape) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def param_shardings(params: Any, mesh: Mesh, fsdp: bool = True) -> Any:
  """A pytree of NamedShardings matching `params` (arrays or ShapeDtypeStructs)."""
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(x.shape, mesh, fsdp)), params)


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
