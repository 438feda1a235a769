"""Every random stream of synth_jax, by name: `(config.seed, stream name, *ids)` -> random bits.

  rng = streams.rng(seed, "few_shot", class_id)           # numpy Generator
  s = streams.int_seed(seed, "image_noise", class_id, i)  # a uint32 (grain seeds, per-image seeds)
  key = streams.key(seed, "train_step", phase)            # a jax PRNG key (fold in the step in jit)

One helper and one table, so the same config gives the same bytes on any mesh, host count and
after any resume, and no two streams can collide: a stream's entropy is
`[seed, id(name), len(ids), *ids]` with `id(name)` a fixed 32-bit hash of the name (adding a stream
never moves another) and the length prefix keeping `(a,)` and `(a, 0)` apart (SeedSequence pads
short entropy with zeros). `tests/foundation/test_streams.py` checks that every name in `STREAMS`
has its own id and that used streams never share entropy.
"""
from __future__ import annotations

import zlib

import numpy as np

# name -> what it draws (and its ids). Code asks for a stream by one of these names only.
STREAMS = {
    # data
    "few_shot": "which k real images of class c are kept (class_id); prompts' CLIP references too",
    "synthetic_volume": "which synthetic images of class c are kept (class_id)",
    "digits_split": "which scikit-learn digits of class c are test images (class_id)",
    "digit_source_split": "which non-test digits of class c train the study's generator (class_id)",
    "digit_render": "style, context and paper grain of rendering r of digit i (sample index, r)",
    "import_split": "which images of class c go to the test split of an import (class_id)",
    "shuffle": "a training phase's index shuffle (phase, source)",
    "augment": "per-example augmentation of a training phase (phase, source)",
    # prompts / generate
    "image_noise": "the uint32 seed of image i of class c, its starting latent (class_id, index)",
    "prompt_choice": "which prompt image i of class c gets (class_id, index)",
    "llm_sample": "the LLM's sampling seed for a request about class c (class_id, request kind)",
    "llm_retry": "the seed of retry a of an LLM request, from the request's seed (attempt)",
    # invert
    "invert_images": "which real images an inversion uses when max_images caps them",
    "invert_batch": "images, flips and templates of inversion step s (step)",
    "invert_noise": "noise and timesteps of inversion step s (step)",
    # finetune
    "finetune_batch": "images and caption dropout of diffusion-training step s (step)",
    "finetune_noise": "noise and timesteps of diffusion-training step s (step)",
    "vae_holdout": "which real images a from-scratch VAE holds out for its PSNR",
    "vae_batch": "images and posterior noise of from-scratch VAE step s (step)",
    "generator_init": "random init of a generator's component (0 unet, 1 vae, 2 text encoder)",
    # train
    "model_init": "a classifier's random init",
    "cas_sample": "the uint32 seed of image i of a CAS check's generated set (index)",
    "reference_classifier": "the report's CAS classifier init (no ids); its image subsets (1)",
    "head_reinit": "the re-initialised head before a phase (phase)",
    "train_step": "a phase's per-step randomness (Mixup, CutMix, dropout) (phase)",
}


def stream_id(name: str) -> int:
  """The fixed 32-bit id of stream `name`; an unknown name is a programming error."""
  if name not in STREAMS:
    raise KeyError(f"random stream {name!r} is not in synth_jax.streams.STREAMS; add it there")
  return zlib.crc32(name.encode("utf-8"))


def entropy(seed: int, name: str, *ids: int) -> list[int]:
  for v in (seed, *ids):
    if int(v) < 0:
      raise ValueError(f"stream {name!r}: seeds and ids must be >= 0, got {v}")
  return [int(seed), stream_id(name), len(ids), *(int(i) for i in ids)]


def seed_sequence(seed: int, name: str, *ids: int) -> np.random.SeedSequence:
  return np.random.SeedSequence(entropy(seed, name, *ids))


def rng(seed: int, name: str, *ids: int) -> np.random.Generator:
  """A numpy Generator for stream `name`."""
  return np.random.default_rng(seed_sequence(seed, name, *ids))


def int_seed(seed: int, name: str, *ids: int) -> int:
  """A uint32 drawn from stream `name` (for APIs that take an int seed: grain, PRNGKey)."""
  return int(seed_sequence(seed, name, *ids).generate_state(1)[0])


def key(seed: int, name: str, *ids: int):
  """A threefry jax PRNG key holding 64 bits of stream `name`."""
  import jax
  data = seed_sequence(seed, name, *ids).generate_state(2).astype(np.uint32)
  return jax.random.wrap_key_data(data, impl="threefry2x32")
