"""The shipped generator (issue 19, point 4): its files match their recorded sha256, PyTorch
diffusers loads it, the package ships it, and its CAS stays within 2 points of the recorded one."""
import hashlib
import json
import os

import numpy as np
import pytest

ASSET = os.path.join(os.path.dirname(__file__), "..", "..", "synth_jax", "assets", "digits_generator")


def _record():
  with open(os.path.join(ASSET, "generator.json")) as f:
    return json.load(f)


def test_files_match_recorded_sha256_and_fit_the_size_budget():
  rec = _record()
  on_disk = set()
  for d, _, names in os.walk(ASSET):
    on_disk |= {os.path.relpath(os.path.join(d, n), ASSET) for n in names}
  assert on_disk - {"generator.json", "TRAINED.md", "samples.png"} == set(rec["sha256"])
  total = 0
  for rel, digest in rec["sha256"].items():
    data = open(os.path.join(ASSET, rel), "rb").read()
    total += len(data)
    assert hashlib.sha256(data).hexdigest() == digest, rel
  assert total == rec["bytes"] and total <= 10 * 1024 * 1024
  assert rec["command"].startswith("synth-jax finetune") and rec["train_seconds"] > 0
  assert rec["config"]["init"] == "scratch"
  assert "digits_source_captions" in rec["config"]["dataset"]  # the study's source images only


def test_loads_in_pytorch_diffusers_and_samples_an_image():
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  pipe = diffusers.StableDiffusionPipeline.from_pretrained(ASSET, safety_checker=None,
                                                           requires_safety_checker=False)
  out = pipe("a digit three", num_inference_steps=2, guidance_scale=3.0, height=16, width=16,
             generator=torch.Generator().manual_seed(0), output_type="np").images
  assert out.shape == (1, 16, 16, 3) and np.isfinite(out).all()


@pytest.mark.slow
def test_cas_stays_within_two_points_of_the_record():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "ship_generator", os.path.join(os.path.dirname(__file__), "..", "..", "bench", "ship_generator.py"))
  ship = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ship)
  rec = _record()["cas"]
  got, _ = ship.measure_cas(ASSET, per_class=rec["per_class"], seed=rec["seed"],
                            resolution=rec["resolution"], guidance=rec["guidance"])
  assert got["cas"] >= rec["cas"] - 0.02, (got, rec)
