"""loop.evaluate on 2 real jax.distributed CPU processes == the same split on one process."""
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import sharding
from synth_jax.train import loop

N, GLOBAL_BATCH, CLASSES = 13, 8, 3  # 2 global batches, the last one 3 rows short (masked out)

_WORKER = r'''
import json, sys
pid, port = int(sys.argv[1]), sys.argv[2]
import jax
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
from synth_jax import sharding
from synth_jax.train import loop
from tests.train import test_multihost_eval as t
mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
batches = t.host_batches(pid, 2)
print(json.dumps({"devices": jax.device_count(), "local_rows": len(batches[0]["label"]),
                  "metrics": loop.evaluate(t.eval_step(), {}, {}, batches, mesh, t.CLASSES)}))
'''


def host_batches(process: int, count: int) -> list[dict]:
  """This process's rows of each global batch, padded and masked like pipeline.make_eval_dataset."""
  rows = GLOBAL_BATCH // count
  out = []
  for start in range(0, N, GLOBAL_BATCH):
    ids = np.arange(start + process * rows, start + (process + 1) * rows)
    out.append({"image": ids.astype(np.float32)[:, None], "label": ids % CLASSES,
                "mask": ids < N})
  return out


def eval_step():
  """A stand-in for steps.make_eval_step: per-example hits that depend on the example id."""
  def step(params, stats, batch):
    del params, stats
    x = batch["image"][:, 0].astype(jnp.int32)
    return {"top1": x % 2 == 0, "top5": x % 3 != 1, "label": batch["label"],
            "mask": batch["mask"], "loss": batch["image"][:, 0]}
  return jax.jit(step)


def test_two_processes_evaluate_the_whole_split(tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONPATH": root}
  procs = [subprocess.Popen([sys.executable, str(script), str(p), str(port)], env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for p in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  # One process holding every row of the same global batches (8 fake devices).
  want = loop.evaluate(eval_step(), {}, {}, host_batches(0, 1),
                       sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}), CLASSES)
  ids = np.arange(N)
  assert want["num_examples"] == N and want["top1"] == pytest.approx(np.mean(ids % 2 == 0))
  assert want["loss"] == pytest.approx(ids.mean())
  for out, _ in outs:
    r = json.loads(out.strip().splitlines()[-1])
    assert r["devices"] == 4 and r["local_rows"] == GLOBAL_BATCH // 2
    assert r["metrics"] == want
