"""Hub ids resolved offline from a cache laid out as huggingface_hub writes it."""
import os
import shutil

import numpy as np
import pytest

from synth_jax.diffusion import hub
from synth_jax.diffusion import loading
from synth_jax.diffusion import tiny
from synth_jax.errors import WeightsError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache(root, repo: str, folder: str, variant_of: str | None = None) -> str:
  """models--org--name/{refs/main, snapshots/<commit>/..., blobs/<sha>}: files as symlinks to
  blobs, as huggingface_hub stores them. variant_of: also store the weights as *.fp16.*."""
  base = os.path.join(root, "hub", "models--" + repo.replace("/", "--"))
  snap = os.path.join(base, "snapshots", COMMIT)
  os.makedirs(os.path.join(base, "blobs"))
  os.makedirs(os.path.join(base, "refs"))
  with open(os.path.join(base, "refs", "main"), "w") as f:
    f.write(COMMIT)
  for dirpath, _, names in os.walk(folder):
    for name in names:
      rel = os.path.relpath(os.path.join(dirpath, name), folder)
      targets = [rel]
      if variant_of and rel.endswith(".safetensors"):
        targets = [rel.replace(".safetensors", f".{variant_of}.safetensors")]
      for target in targets:
        blob = os.path.join(base, "blobs", f"{abs(hash(target)):x}")
        shutil.copyfile(os.path.join(dirpath, name), blob)
        dst = os.path.join(snap, target)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(os.path.relpath(blob, os.path.dirname(dst)), dst)
  return snap


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
  return tiny.make_tiny_pipeline(str(tmp_path_factory.mktemp("hub") / "tiny"), seed=3)


@pytest.fixture
def offline_cache(tiny_folder, tmp_path, monkeypatch):
  from huggingface_hub import constants
  folder = tiny_folder
  root = tmp_path / "hf_home"
  _cache(str(root), "someorg/tiny-sd", folder)
  _cache(str(root), "someorg/tiny-sd-fp16", folder, variant_of="fp16")
  # what HF_HOME=<root> HF_HUB_OFFLINE=1 set before the import would give
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  return folder


def test_hub_id_loads_from_the_cache_offline(offline_cache):
  local = loading.load_pipeline(offline_cache)
  pipe = loading.load("someorg/tiny-sd")
  for name in ("unet", "vae", "text_encoder"):
    a, b = pipe.params[name], local.params[name]
    import jax
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))
  assert hub.resolve("someorg/tiny-sd").endswith(os.path.join("snapshots", COMMIT))
  assert hub.resolve("someorg/tiny-sd", revision=COMMIT).endswith(COMMIT)
  fp16 = loading.load("someorg/tiny-sd-fp16", variant="fp16")  # *.fp16.safetensors only
  assert fp16.configs["unet"] == local.configs["unet"]


def test_diffusers_reads_the_same_cache(offline_cache, monkeypatch):
  """The layout is the real one: diffusers itself loads the id from this cache offline."""
  import diffusers
  from huggingface_hub import constants
  pt = diffusers.StableDiffusionPipeline.from_pretrained(
      "someorg/tiny-sd", cache_dir=constants.HF_HUB_CACHE, local_files_only=True,
      safety_checker=None)
  assert pt.unet.config.block_out_channels == loading.load("someorg/tiny-sd").configs[
      "unet"]["block_out_channels"]


def test_uncached_hub_id_offline_is_one_line(offline_cache):
  with pytest.raises(WeightsError) as e:
    loading.load("someorg/not-downloaded")
  msg = str(e.value)
  assert "'someorg/not-downloaded'" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg
  with pytest.raises(WeightsError, match="revision v2"):
    loading.load("someorg/tiny-sd", revision="v2")
  assert not hub.is_hub_id(offline_cache) and hub.is_hub_id("org/name")
