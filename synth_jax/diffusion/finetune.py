"""`synth-jax finetune`: train a Stable Diffusion UNet on a real dataset, resumable.

    synth-jax finetune --config configs/finetune/base.py:model=/models/sd15,dataset=cars \
        --config.workdir=runs/finetune/cars

The objective, optimizer and EMA are diffusers' train_text_to_image.py (finetune_objective), the
state and jitted step are finetune_step, the images and captions finetune_data. `init=scratch`
first builds a small random pipeline from the config's sizes and trains its VAE
(finetune_scratch), then trains the UNet (and text encoder) on its latents exactly as a
pretrained model is fine-tuned. Step s's batch, noise and timesteps derive from (seed, s) only,
so a run resumed from an orbax checkpoint (params, EMA, optimizer, step; the data iterator's
state is the step) ends bitwise equal to an uninterrupted one; every checkpoint file's size and
sha256 are recorded and checked before a restore. The result is `<workdir>/pipeline`: a complete
diffusers folder (the base's VAE, text encoder, tokenizer and scheduler plus the trained UNet;
its EMA when `ema`), written last, which `synth-jax generate` takes as model_path.
"""
from __future__ import annotations

import io
import logging
import os
import time

import jax
import numpy as np

from synth_jax import checkpoint_integrity, faults, files, runs, sharding
from synth_jax.diffusion import finetune_data, finetune_step, invert_state, loading
from synth_jax.errors import ConfigError, TrainingError, WeightsError

log = logging.getLogger(__name__)
INITS = ("pretrained", "scratch")


def validate(config) -> None:
  if int(config.steps) < 1:
    raise ConfigError(f"steps={config.steps} must be >= 1; pass e.g. --config.steps=15000")
  if float(config.learning_rate) <= 0:
    raise ConfigError(f"learning_rate={config.learning_rate} must be > 0")
  if int(config.resolution) % 8:
    raise ConfigError(f"resolution={config.resolution} is not divisible by 8; use e.g. 512")
  if config.init not in INITS:
    raise ConfigError(f"init={config.init!r} is not one of {list(INITS)}; pass e.g. "
                      "--config.init=pretrained")
  if not 0 <= float(config.caption_dropout) < 1:
    raise ConfigError(f"caption_dropout={config.caption_dropout} must be in [0, 1); e.g. 0.1")
  if int(config.checkpoint_every) < 1:
    raise ConfigError(f"checkpoint_every={config.checkpoint_every} must be >= 1")
  for key in ("center_crop", "flip", "ema", "remat", "train_text_encoder"):
    if not isinstance(config.get(key), bool):
      raise ConfigError(f"{key}={config.get(key)!r} must be True or False; pass e.g. "
                        f"--config.{key}=True")


def base_model(config, mesh, workdir: str) -> str:
  """The diffusers folder training starts from: model_path, or the small from-scratch pipeline."""
  if config.init == "scratch":
    from synth_jax.diffusion import finetune_scratch
    return finetune_scratch.prepare(config, mesh, workdir)
  if not os.path.isdir(os.path.expanduser(config.model_path or "")):
    raise WeightsError(f"pipeline folder {config.model_path!r} does not exist; pass a diffusers "
                       "Stable Diffusion folder: --config.model_path=/path/to/sd (or "
                       "--config.init=scratch)")
  return os.path.expanduser(config.model_path)


def _meta(config, trainer) -> dict:
  """What a checkpoint must have been made for (checked on restore)."""
  shapes = jax.tree.leaves(jax.tree.map(lambda x: list(np.shape(x)),
                                        {k: trainer.pipe.params[k] for k in trainer.names}))
  return {"trained": list(trainer.names), "ema": bool(config.ema),
          "num_params": int(sum(int(np.prod(s)) for s in shapes))}


def save(mngr, step: int, state, meta: dict) -> None:
  import orbax.checkpoint as ocp
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()
  checkpoint_integrity.record(mngr, step)


def restore(mngr, step: int, trainer, meta: dict):
  """The state of checkpoint `step`, placed as the trainer's state; refuses another run's."""
  import orbax.checkpoint as ocp
  checkpoint_integrity.verify(mngr, step)
  saved = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  wrong = {k: saved.get(k) for k in meta if saved.get(k) != meta[k]}
  if wrong:
    raise ConfigError(f"checkpoint {step} in {mngr.directory} was made for {wrong}, not "
                      f"{ {k: meta[k] for k in wrong} }; use a new --config.workdir")
  return mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(trainer.abstract_state())))["state"]


def finetune(config) -> str:
  """Runs (or resumes) the fine-tuning; returns the exported pipeline folder."""
  validate(config)
  workdir = runs.workdir(config)
  out = os.path.join(workdir, "pipeline")
  if os.path.exists(os.path.join(out, "model_index.json")):
    log.info("%s exists: fine-tuning already finished", out)
    return out
  mesh = sharding.make_mesh(config.mesh)
  base = base_model(config, mesh, workdir)
  pipe = loading.load_pipeline(base)
  data = finetune_data.load(config, pipe, mesh, workdir)
  trainer = finetune_step.Trainer(config, pipe, mesh)
  mngr = invert_state.manager(workdir, int(config.keep_checkpoints))
  meta = _meta(config, trainer)
  start = 0
  if mngr.latest_step() is not None:
    start = int(mngr.latest_step())
    state = restore(mngr, start, trainer, meta)
    log.info("resuming finetune at step %d", start)
  else:
    state = trainer.init_state()
  total = int(config.steps)
  preview = Preview(config, pipe, data, workdir)
  bar = runs.progress(total=total, initial=start, desc="finetune", unit="step")
  losses = []
  t0 = time.perf_counter()
  for step in range(start, total):
    if runs.should_stop():
      save(mngr, step, state, meta)
      raise runs.Preempted(f"finetune: SIGTERM received; saved step {step}, rerun the same "
                           "command to continue")
    state, loss = trainer.train_step(state, trainer.batch(data, step))
    loss = float(loss)
    if not np.isfinite(loss):
      # the state is not saved: the last checkpoint on disk holds finite weights
      raise TrainingError(f"loss is {loss} at finetune step {step}; the last good checkpoint "
                          f"(step {mngr.latest_step()}) is kept: lower --config.learning_rate "
                          f"(now {config.learning_rate}) or check the data, and rerun")
    losses.append(loss)
    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.update(1)
    done = step + 1
    if done % int(config.checkpoint_every) == 0 or done == total:
      save(mngr, done, state, meta)
    if int(config.preview_every) > 0 and done % int(config.preview_every) == 0 and done < total:
      preview(trainer.exported(state), f"preview_{done:07d}.png")
    faults.point("finetune_step")
  bar.close()
  seconds = time.perf_counter() - t0
  trained = trainer.exported(state)
  files.write_json(os.path.join(workdir, "finetune_log.json"),
                   {"steps": total, "resumed_from": start, "seconds": round(seconds, 1), "last_losses": losses[-50:],
                    "base_model": base, "exported": "ema" if config.ema else "params",
                    "trained": list(trainer.names)})
  preview(trained, "preview_contact_sheet.png")
  export(pipe, trained, out)  # written last: its model_index.json marks the run finished
  log.info("wrote %s", out)
  return out


def export(pipe, trained: dict, out: str) -> None:
  """The base pipeline with the trained components replaced, as a diffusers folder."""
  params = dict(pipe.params)
  params.update(trained)
  loading.save_pipeline(_with_params(pipe, params), out)


def _with_params(pipe, params):
  import dataclasses
  return dataclasses.replace(pipe, params=params)


class Preview:
  """A contact sheet of fixed prompts (one per class, cycled) and seeds, sampled with our sampler."""

  def __init__(self, config, pipe, data, workdir: str):
    self.config, self.pipe, self.workdir = config, pipe, workdir
    self.n = int(config.preview_images)
    self.sampler = None
    names = data.class_names
    self.prompts = [pipe.tokenizer.decode(data.prompt_ids[i % len(names), 0],
                                          skip_special_tokens=True) for i in range(self.n)]

  def __call__(self, trained: dict, name: str) -> None:
    if self.n <= 0 or jax.process_index() != 0:
      return
    from PIL import Image
    from synth_jax.diffusion import sampler as sampler_lib
    params = {**self.pipe.params, **trained}
    if self.sampler is None:  # compiled once; later sheets only swap the weights
      mesh = sampler_lib.local_mesh(None)
      dp = sharding.data_parallel_size(mesh)
      self.batch = -(-self.n // dp) * dp
      self.sampler = sampler_lib.Sampler(
          _with_params(self.pipe, params), mesh, batch_size=self.batch,
          num_steps=int(self.config.preview_steps), height=int(self.config.resolution),
          width=int(self.config.resolution), scheduler="dpm++2m")
    else:
      self.sampler.params = jax.device_put(params, jax.tree.map(lambda x: x.sharding,
                                                                self.sampler.params))
    prompts = [self.prompts[i % self.n] for i in range(self.batch)]
    images = self.sampler(prompts, "", np.arange(self.batch, dtype=np.uint32),
                          float(self.config.preview_guidance))[:self.n]
    files.write_bytes(os.path.join(self.workdir, name), contact_sheet(images))


def contact_sheet(images: np.ndarray, cols: int = 8) -> bytes:
  """uint8 (N, H, W, 3) -> PNG bytes of a grid, `cols` wide."""
  from PIL import Image
  n, h, w = images.shape[:3]
  cols = min(cols, n)
  sheet = Image.new("RGB", (cols * w, -(-n // cols) * h))
  for i, im in enumerate(images):
    sheet.paste(Image.fromarray(im), ((i % cols) * w, (i // cols) * h))
  buf = io.BytesIO()
  sheet.save(buf, format="PNG")
  return buf.getvalue()
