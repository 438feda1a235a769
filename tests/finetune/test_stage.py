"""`synth-jax finetune` end to end on a tiny random PyTorch SD and 16 px digits.

The export is checked in PyTorch diffusers (loads, samples as our sampler does, only the UNet
differs from the original), resume after kill -9 and SIGTERM bitwise against an uninterrupted
run, a NaN loss stops naming its step with the last good checkpoint intact.
"""
import io
import os
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import checkpoint_integrity, runs
from synth_jax import config as config_lib
from synth_jax.data import digits
from synth_jax.diffusion import finetune, finetune_data, loading
from synth_jax.diffusion import sampler as sampler_lib
from synth_jax.errors import TrainingError
from synth_jax.models import weights
from tests.diffusion_io import helpers
from tests.finetune import common

UNET_FILE = os.path.join("pipeline", "unet", "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("fts")
  pt = helpers.make_torch_pipeline(str(root / "sd"), seed=7)
  data = digits.write_digits(str(root / "data"), size=16)
  return root, pt, data


def _arg(root, data, steps=4):
  return f"{common.BASE}:model={root / 'sd'},dataset={data},shots=2,steps={steps},resolution=16"


def _overrides(workdir, *extra):
  return [f"workdir={workdir}", "batch_size=8", "dtype=float32", "checkpoint_every=2",
          "preview_images=0", "learning_rate=1e-3", "ema_decay=0.9", *extra]


def _config(root, data, workdir, *extra, steps=4):
  return config_lib.load_config(_arg(root, data, steps), _overrides(workdir, *extra))


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
  """An uninterrupted in-process run (8 fake devices) with a preview sheet."""
  root, _, data = setup
  run = tmp_path_factory.mktemp("ftref") / "ref"
  out = finetune.finetune(_config(root, data, run, "preview_images=4", "preview_steps=2"))
  return run, out


def _state_dicts(pipe):
  return {name: {k: v.detach().numpy() for k, v in getattr(pipe, name).state_dict().items()}
          for name in ("unet", "vae", "text_encoder")}


@pytest.mark.slow
def test_export_loads_in_diffusers_samples_as_ours_and_only_the_unet_changed(setup, reference):
  import diffusers
  import torch
  root, pt, _ = setup
  run, out = reference
  assert (run / "preview_contact_sheet.png").stat().st_size > 0
  exported = diffusers.StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
  before, after = _state_dicts(pt), _state_dicts(exported)
  for name in ("vae", "text_encoder"):  # bitwise as the original
    assert before[name].keys() == after[name].keys()
    for k in before[name]:
      np.testing.assert_array_equal(before[name][k], after[name][k], err_msg=f"{name}/{k}")
  assert before["unet"].keys() == after["unet"].keys()
  changed = max(float(np.abs(before["unet"][k] - after["unet"][k]).max()) for k in before["unet"])
  assert changed > 1e-4  # the UNet trained
  assert exported.tokenizer.get_vocab() == pt.tokenizer.get_vocab()
  public = lambda c: {k: v for k, v in dict(c).items() if not k.startswith("_")}  # noqa: E731
  assert public(exported.scheduler.config) == public(pt.scheduler.config)
  # the exported folder samples the same images in PyTorch and with our sampler
  prompts = ["a photo of a three", "a photo of a seven"]
  latents = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
  ref = exported(prompts, num_inference_steps=6, guidance_scale=5.0, height=16, width=16,
                 latents=torch.from_numpy(latents), output_type="np").images
  ref = (ref * 255).round().astype(np.uint8)
  mesh = sampler_lib.local_mesh(None)
  from synth_jax import sharding
  s = sampler_lib.Sampler(loading.load_pipeline(out), sharding.make_mesh(
      {"data": 1}, devices=mesh.devices.flatten()[:1]), batch_size=2, num_steps=6)
  ours = s.sample_from_latents(prompts, "", latents.transpose(0, 2, 3, 1), 5.0)
  diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
  print(f"exported folder, ours vs diffusers: max abs pixel diff {diff}/255; UNet moved {changed:.1e}")
  assert diff <= 2  # tests/diffusion_models/test_sampler.py's bound


@pytest.mark.slow
def test_sigterm_saves_and_rerun_equals_uninterrupted(setup, reference, tmp_path, monkeypatch):
  root, _, data = setup
  ref_run, _ = reference
  run = tmp_path / "s"
  calls = iter(range(100))
  monkeypatch.setattr(runs, "should_stop", lambda: next(calls) == 3)  # before step 3
  with pytest.raises(runs.Preempted, match="saved step 3"):
    finetune.finetune(_config(root, data, run, "preview_images=4", "preview_steps=2"))
  assert checkpoint_integrity.checkpoint_manager(str(run), 2).latest_step() == 3
  monkeypatch.setattr(runs, "should_stop", lambda: False)
  finetune.finetune(_config(root, data, run, "preview_images=4", "preview_steps=2"))
  a = weights.read_tensors(str(ref_run / UNET_FILE))
  b = weights.read_tensors(str(run / UNET_FILE))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_kill9_then_rerun_gives_a_bitwise_equal_unet(setup, tmp_path):
  root, _, data = setup
  env = {**os.environ, "PYTHONPATH": common.ROOT, "SYNTH_JAX_NO_PROGRESS": "1", "XLA_FLAGS": ""}

  def cli(workdir, extra_env=None):
    return subprocess.run(
        [sys.executable, "-m", "synth_jax.cli", "finetune", "--config", _arg(root, data)] +
        [f"--config.{o}" for o in _overrides(workdir)],
        cwd=common.ROOT, env={**env, **(extra_env or {})}, capture_output=True, text=True,
        timeout=900)
  ref = cli(tmp_path / "ref")
  assert ref.returncode == 0, ref.stderr[-2000:]
  killed = cli(tmp_path / "k", {"SYNTH_JAX_KILL_AT": "finetune_step:3"})
  assert killed.returncode == -signal.SIGKILL
  assert not (tmp_path / "k" / "pipeline").exists()
  assert checkpoint_integrity.checkpoint_manager(str(tmp_path / "k"), 2).latest_step() == 2
  again = cli(tmp_path / "k")
  assert again.returncode == 0, again.stderr[-2000:]
  a = weights.read_tensors(str(tmp_path / "ref" / UNET_FILE))
  b = weights.read_tensors(str(tmp_path / "k" / UNET_FILE))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(setup, tmp_path):
  """A NaN in the cached latents of one image that steps 0..p-1 never draw: the run checkpoints,
  hits NaN at step p, stops; the checkpoint before p is intact (size/sha256) and finite."""
  root, _, data = setup
  run = tmp_path / "n"
  cfg = _config(root, data, run, "caption_dropout=0.0", steps=8)
  pipe = loading.load_pipeline(cfg.model_path, dtype=jnp.float32)
  from synth_jax import sharding
  clean = finetune_data.load(cfg, pipe, sharding.make_mesh(cfg.mesh), str(run))  # the cache
  drawn = [set(clean.draw(int(cfg.seed), s, 8, 0.0)[0]) for s in range(8)]
  first = {i: next(s for s in range(8) if i in drawn[s]) for i in set().union(*drawn)}
  img, p = min(((i, s) for i, s in first.items() if s >= 2), key=lambda x: x[1])
  with np.load(run / "latents.npz", allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  arrays["mean"][img] = np.nan
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  (run / "latents.npz").write_bytes(buf.getvalue())
  last = p // 2 * 2  # checkpoint_every=2
  with pytest.raises(TrainingError, match=f"loss is nan at finetune step {p}; the last good "
                                          rf"checkpoint \(step {last}\) is kept"):
    finetune.finetune(cfg)
  assert not (run / "pipeline").exists()
  mngr = checkpoint_integrity.checkpoint_manager(str(run), 2)
  assert mngr.latest_step() == last
  checkpoint_integrity.verify(mngr, last)
  trainer = finetune.finetune_step.Trainer(cfg, pipe, sharding.make_mesh(cfg.mesh))
  state = finetune.restore(mngr, last, trainer, finetune._meta(cfg, trainer))
  assert int(state["step"]) == last
  import jax
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


@pytest.mark.slow
def test_scratch_trains_vae_then_unet_and_exports_a_diffusers_folder(tmp_path):
  """init=scratch with digits_scratch.py's recipe, a few steps: the VAE trained (held-out PSNR
  recorded, scaling_factor from its latents), the result loads in PyTorch diffusers."""
  import json
  import diffusers
  data = digits.write_digits(str(tmp_path / "data"), size=16)
  cfg = config_lib.load_config(
      os.path.join(common.ROOT, "configs", "finetune", "digits_scratch.py") +
      f":dataset={data},steps=2,vae_steps=3,shots=4",
      [f"workdir={tmp_path / 'w'}", "batch_size=8", "scratch.vae_batch_size=8",
       "preview_images=0"])
  out = finetune.finetune(cfg)
  log = json.loads((tmp_path / "w" / "vae_log.json").read_text())
  assert log["held_out_images"] == 4 and np.isfinite(log["psnr_held_out_db"])
  pt = diffusers.StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
  assert abs(pt.vae.config.scaling_factor - log["scaling_factor"]) < 1e-6
  assert pt.unet.config.block_out_channels == [32, 64]
  ids = pt.tokenizer("a photo of the digit seven").input_ids
  words = ["a", "photo", "of", "the", "digit", "seven"]  # whole-word merges for caption words
  assert pt.tokenizer.convert_ids_to_tokens(ids)[1:-1] == [w + "</w>" for w in words]


@pytest.mark.slow
def test_more_steps_continues_a_finished_run_to_the_uninterrupted_result(setup, reference, tmp_path):
  """checks.MAY_GROW: 2 steps, then a rerun with steps=4 equals the 4-step run; fewer is refused."""
  from synth_jax.errors import RunDirError
  root, _, data = setup
  ref_run, _ = reference
  run = tmp_path / "g"
  extra = ("preview_images=4", "preview_steps=2")
  runs.run_stage("finetune", finetune.finetune, _config(root, data, run, *extra, steps=2))
  two = weights.read_tensors(str(run / UNET_FILE))
  runs.run_stage("finetune", finetune.finetune, _config(root, data, run, *extra, steps=4))
  a = weights.read_tensors(str(ref_run / UNET_FILE))
  b = weights.read_tensors(str(run / UNET_FILE))
  assert any(not np.array_equal(two[k], b[k]) for k in b)  # re-exported after the new steps
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with pytest.raises(RunDirError, match="steps"):
    runs.run_stage("finetune", finetune.finetune, _config(root, data, run, *extra, steps=3))
