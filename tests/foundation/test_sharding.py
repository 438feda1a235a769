import os
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
  # the rule table names Dense_0/kernel (embed, mlp): the mlp side goes to fsdp; small tensors stay whole
  params = {"Dense_0": {"kernel": jnp.zeros((256, 128)), "bias": jnp.zeros((128,))}}
  shards = sharding.logical_shardings(params, mesh)
  assert shards["Dense_0"]["kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp")
  assert shards["Dense_0"]["bias"].spec == jax.sharding.PartitionSpec()


def test_mesh_that_mesh_utils_cannot_lay_out_is_a_mesh_error(monkeypatch):
  from jax.experimental import mesh_utils

  class FakeTPU:
    platform, device_kind = "tpu", "TPU v4"

  def refuse(shape, devices):
    raise NotImplementedError("no physical layout")
  monkeypatch.setattr(mesh_utils, "create_device_mesh", refuse)
  with pytest.raises(MeshError, match=r"mesh \{'data': 2, 'fsdp': 1, 'tensor': 2\} cannot be laid out"):
    sharding.make_mesh({"data": 2, "tensor": 2}, devices=[FakeTPU() for _ in range(4)])


def test_initialize_distributed_is_noop_on_one_host(monkeypatch):
  for var in ("TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(1))
  assert sharding.maybe_initialize_distributed() is False
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "h0,h1")
  assert sharding.maybe_initialize_distributed() is True
  assert called == [1]


_WORKER = r'''
import json, os, sys
pid, port = int(sys.argv[1]), sys.argv[2]
import jax, numpy as np
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
from synth_jax import sharding
mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
w = np.arange(1, 9, dtype=np.float32)[:, None]
f = jax.jit(lambda a: (a * w).sum(0), out_shardings=sharding.replicated(mesh))
whole = sharding.shard_global_batch(x, mesh)             # every process holds all 8 rows
local = sharding.shard_batch(x[pid * 4:(pid + 1) * 4], mesh)  # every process holds its 4 rows
print(json.dumps({"devices": jax.device_count(), "shapes": [whole.shape, local.shape],
                  "whole": np.asarray(f(whole)).tolist(), "local": np.asarray(f(local)).tolist(),
                  "want": (x * w).sum(0).tolist()}))
'''


def test_two_processes_see_the_one_global_batch(tmp_path):
  """Real jax.distributed on localhost (2 processes x 2 CPU devices): a batch every process built
  whole and a batch each process built in part both become the same global array."""
  import json
  import socket
  import subprocess
  import sys
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
  procs = [subprocess.Popen([sys.executable, str(script), str(p), str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for p in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  for out, _ in outs:
    r = json.loads(out.strip().splitlines()[-1])
    assert r["devices"] == 4 and r["shapes"] == [[8, 3], [8, 3]]
    assert r["whole"] == r["want"] and r["local"] == r["want"]
