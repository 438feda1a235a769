"""`synth-jax generate` (the tiny SD through the real sampler) as 2 jax.distributed processes:
the synthetic dataset is byte-identical to one process over the same global device count.

Each image's latents come from (seed, class, index) and every process renders whole shards
(shard k on process k mod N) on its own devices, so no image depends on the host count."""
import json
import os

import pytest

from tests.generate.test_generate import BASE, _digest
from tests.multihost import harness


def _args(model, workdir):
  return ["generate", "--config", f"{BASE}:model={model},n=3,resolution=16",
          f"--config.workdir={workdir}", "--config.class_names=cat,dog", "--config.batch_size=4",
          "--config.images_per_shard=2", "--config.steps=2", "--config.dtype=float32"]


def _compare(tmp_path, processes):
  from synth_jax.diffusion import tiny
  model = tiny.make_tiny_pipeline(str(tmp_path / "sd"), sample_size=8)
  harness.run(_args(model, tmp_path / "many"), processes, 4 // processes)
  harness.run(_args(model, tmp_path / "one"), 1, 4)
  many, one = (tmp_path / d / "synthetic" / "1.0.0" for d in ("many", "one"))
  got, want = _digest(many), _digest(one)
  assert len(want) == 3 and got == want  # 6 images in 3 shards, every shard byte-identical
  info = [json.load(open(d / "dataset_info.json")) for d in (many, one)]
  assert info[0]["splits"] == info[1]["splits"]
  runtime = json.load(open(tmp_path / "many" / "config.json"))["runtime"]
  assert runtime["process_count"] == processes and runtime["device_count"] == 4
  assert sorted(os.listdir(tmp_path / "many" / "logs")) == [f"host-{i}.log" for i in range(processes)]


def test_generate_two_processes_byte_identical(tmp_path):
  _compare(tmp_path, 2)


@pytest.mark.slow
def test_generate_four_processes_byte_identical(tmp_path):
  _compare(tmp_path, 4)
