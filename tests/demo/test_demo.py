"""`synth-jax demo` end to end through the CLI, at a size that runs in about a minute."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path):
  env = {**os.environ, "SYNTH_JAX_NO_PROGRESS": "1", "XLA_FLAGS": ""}
  cmd = [sys.executable, "-m", "synth_jax.cli", "demo", f"--config.workdir={tmp_path}/demo",
         "--config.images_per_class=2", "--config.steps=2", "--config.phase1_steps=5",
         "--config.phase2_steps=10", "--config.methods=vanilla,bridged"]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  shipped = os.path.isfile(os.path.join(ROOT, "synth_jax", "assets", "digits_generator", "model_index.json"))
  assert ("generator: a small diffusers pipeline trained from scratch" in out.stdout) == shipped
  assert ("untrained" in out.stdout) != shipped
  results = json.load(open(tmp_path / "demo" / "results.json"))
  assert set(results) == {"vanilla", "bridged"}
  assert all(0.0 <= r["top1"] <= 1.0 for r in results.values())
  md = (tmp_path / "demo" / "results.md").read_text()
  assert "| vanilla |" in md and "| bridged |" in md
  from PIL import Image
  assert Image.open(tmp_path / "demo" / "contact_sheet.png").size == (10 * 48, 10 * 48)  # a row per digit
  for name in ("accuracy.png", "generate/contact_sheet_nine.png"):
    assert (tmp_path / "demo" / name).stat().st_size > 0, name
  bridged = json.load(open(tmp_path / "demo" / "train" / "bridged" / "results.json"))
  assert [s["data"] for s in bridged["phases"]] == ["synthetic", "real"]
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert again.returncode == 0 and json.load(open(tmp_path / "demo" / "results.json")) == results
