"""A deterministic stand-in sampler: each image is a function of (prompt, seed) only."""
import sys
import time
import zlib

import numpy as np


class FakeSampler:
  def __init__(self, config, delay: float = 0.0):
    self.config = config
    self.batch_size = int(config.batch_size)
    self.size = int(config.resolution or 16)
    self.delay = delay
    self.calls = 0

  def __call__(self, prompts, negative, seeds, guidance):
    self.calls += 1
    time.sleep(self.delay)
    out = []
    for p, s in zip(prompts, seeds):
      rng = np.random.default_rng([int(s), zlib.crc32(p.encode())])
      out.append(rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8))
    return np.stack(out)


def main():
  """python -m tests.generate.fake WORKDIR [delay]: the generate stage with the fake sampler."""
  from synth_jax import config as config_lib, runs
  from synth_jax.diffusion import generate
  cfg = config_lib.load_config("configs/generate/base.py:n=5,resolution=16",
                               [f"--config.workdir={sys.argv[1]}", "--config.class_names=cat,dog,bird",
                                "--config.batch_size=2", "--config.images_per_shard=4",
                                "--config.mesh.data=2", "--config.mesh.tensor=-1"])
  delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
  try:
    runs.run_stage("generate", lambda c: generate.generate(c, lambda c: FakeSampler(c, delay)), cfg)
  except runs.Preempted as e:
    print(e)
    sys.exit(0)


if __name__ == "__main__":
  main()
