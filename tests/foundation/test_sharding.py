import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import sharding
from synth_jax.errors import MeshError


def test_eight_fake_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize("spec, shape", [
    ({"data": 8}, (8, 1, 1)),
    ({"data": 2, "fsdp": 4}, (2, 4, 1)),
    ({"data": -1, "fsdp": 2}, (4, 2, 1)),
    ({"data": 2, "fsdp": -1, "tensor": 2}, (2, 2, 2)),
    (None, (8, 1, 1)),
])
def test_mesh_shapes(spec, shape):
  mesh = sharding.make_mesh(spec)
  assert tuple(mesh.shape[a] for a in sharding.AXES) == shape
  assert mesh.axis_names == sharding.AXES


@pytest.mark.parametrize("spec, needle", [
    ({"data": 3}, "uses 3 devices, there are 8"),
    ({"data": -1, "fsdp": 3}, "multiple of 3"),
    ({"data": -1, "fsdp": -1}, "only one axis"),
    ({"data": 0}, "positive"),
])
def test_bad_mesh_is_clear_error(spec, needle):
  with pytest.raises(MeshError, match=needle):
    sharding.make_mesh(spec)


def test_batch_not_divisible():
  mesh = sharding.make_mesh({"data": 8})
  with pytest.raises(MeshError, match="batch_size=12 does not divide over 8"):
    sharding.check_batch(mesh, 12)
  sharding.check_batch(mesh, 16)


def test_shard_batch_and_params():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  xs = sharding.shard_batch({"x": x}, mesh)["x"]
  assert len(xs.addressable_shards) == 8
  assert xs.addressable_shards[0].data.shape == (2, 3)
  np.testing.assert_array_equal(np.asarray(xs), x)
  params = {"big": jnp.zeros((256, 128)), "bias": jnp.zeros((128,))}
  shards = sharding.param_shardings(params, mesh)
  assert shards["big"].spec == jax.sharding.PartitionSpec("fsdp", None)
  assert shards["bias"].spec == jax.sharding.PartitionSpec()


def test_initialize_distributed_is_noop_on_one_host(monkeypatch):
  for var in ("TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(1))
  assert sharding.maybe_initialize_distributed() is False
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "h0,h1")
  assert sharding.maybe_initialize_distributed() is True
  assert called == [1]
