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

import json
import logging
import os
import time

import jax
import numpy as np

from synth_jax import checkpoint_integrity, faults, files, hosts, runs, sharding
from synth_jax import config as config_lib
from synth_jax.diffusion import finetune_data, finetune_step, generate_finish, loading
from synth_jax.errors import ConfigError, TrainingError, WeightsError

log = logging.getLogger(__name__)
INITS = ("pretrained", "scratch")


def validate(config) -> None:
  """Every field before any model loads or anything is written (checks.VALIDATORS["finetune"])."""
  from synth_jax import checks
  from synth_jax.checks import BIG, Bool, Float, Int, OneOf, Path, Text
  checks.check(config, {
      "compile_cache": Text(), "model_path": Text(), "init": OneOf(INITS, "pretrained"),
      "dtype": OneOf(("float32", "bfloat16"), "bfloat16"),
      "dataset": Text(True, "cars"), "data_dir": Path("dir"), "split": Text(True, "train"),
      "shots": Int(-1, BIG, 10), "max_images": Int(0, BIG, 0), "resolution": Int(8, 4096, 512),
      "center_crop": Bool(), "flip": Bool(), "encode_batch_size": Int(1, 4096, 16),
      "prompts_path": Path("file"), "caption_dropout": Float(0, 0.99, 0.1),
      "snr_gamma": Float(0, 100, 5.0), "noise_offset": Float(0, 1, 0.05),
      "steps": Int(0, BIG, 15000), "examples": Int(0, BIG, 0), "epochs": Float(0, 1e6, 0),
      "batch_size": Int(1, 65536, 32), "grad_accum": Int(1, 65536, 1),
      "learning_rate": Float(0, 1, 1e-5, lo_open=True), "warmup_steps": Int(0, BIG, 0),
      "adam_beta1": Float(0, 0.9999, 0.9), "adam_beta2": Float(0, 0.9999999, 0.999),
      "adam_epsilon": Float(0, 1, 1e-8, lo_open=True), "weight_decay": Float(0, 10, 1e-2),
      "max_grad_norm": Float(0, 1e6, 1.0), "ema": Bool(), "ema_decay": Float(0, 1, 0.9999),
      "remat": Bool(), "train_text_encoder": Bool(), "seed": Int(0, 2**32 - 1, 0),
      "checkpoint_every": Int(1, BIG, 500), "keep_checkpoints": Int(1, 1000, 2),
      "preview_every": Int(0, BIG, 0), "preview_images": Int(0, 1024, 8),
      "preview_steps": Int(1, 1000, 25), "preview_guidance": Float(0, 50, 7.5),
      "scratch.max_length": Int(2, 512, 16), "scratch.vae_steps": Int(1, BIG, 400),
      "scratch.vae_batch_size": Int(1, 4096, 32),
      "scratch.vae_learning_rate": Float(0, 1, 1e-3, lo_open=True),
      "scratch.vae_kl_weight": Float(0, 1000, 1e-4),
      "scratch.vae_holdout": Float(0, 0.5, 0.1, lo_open=True),
      "scratch.scheduler.prediction_type": OneOf(("epsilon", "v_prediction"), "epsilon")})
  if config.get("shots") == 0:
    raise checks.bad("shots", 0, "selects nothing; use -1 for all or k >= 1", 10)
  config_lib.check_duration(config, example="steps=15000")
  if not isinstance(config.get("templates"), (list, tuple)) or not config.templates or not all(
      isinstance(t, str) and t.count("{}") == 1 for t in config.templates):
    raise checks.bad("templates", config.get("templates"),
                     "must be a list of captions with one '{}' for the class name",
                     "\"['a photo of a {}']\"")
  if config.batch_size % config.grad_accum:
    raise checks.bad("grad_accum", config.grad_accum,
                     f"does not divide batch_size={config.batch_size}", 1)
  run_dir = runs.workdir(config)
  if config.init == "pretrained":
    checks.check(config, {"model_path": Path("dir", True, "/models/sd15")})
    if not os.path.isfile(os.path.join(os.path.expanduser(config.model_path), "model_index.json")):
      raise checks.bad("model_path", config.model_path, "is not a diffusers pipeline folder "
                       "(no model_index.json); or pass --config.init=scratch", "/models/sd15")
    checks.not_inside_input(run_dir, "model_path", config.model_path)
  else:
    _validate_scratch(config)
  if config.dataset.startswith(("/", "./", "../", "~")) and not os.path.isdir(
      os.path.expanduser(config.dataset)):
    raise checks.bad("dataset", config.dataset, "does not exist (a folder or a dataset name)",
                     "cars")
  if os.path.isdir(os.path.expanduser(config.dataset)):
    checks.not_inside_input(run_dir, "dataset", config.dataset)
  if config.resolution % _vae_factor(config):
    f = _vae_factor(config)
    raise checks.bad("resolution", config.resolution,
                     f"is not divisible by {f} (the VAE's and the UNet's downsampling)", 64 * f)
  mesh = sharding.make_mesh(config.mesh)  # reads the devices only; a bad mesh is a MeshError
  sharding.check_batch(mesh, config.batch_size // config.grad_accum, "batch_size / grad_accum")


def _vae_factor(config) -> int:
  """Pixels per latent side, times the UNet's downsampling (pretrained SD: 8 x 8)."""
  if config.init != "scratch":
    return 8
  sc = config.scratch
  return 2 ** (len(sc.vae.block_out_channels) - 1) * 2 ** (len(sc.unet.block_out_channels) - 1)


def _validate_scratch(config) -> None:
  """init=scratch: the model sizes (diffusers/transformers keys) are positive and consistent."""
  from synth_jax import checks
  sc = config.get("scratch")
  if sc is None or not all(k in sc for k in ("vae", "unet", "text_encoder")):
    raise checks.bad("scratch", sc, "needs the model sizes (vae, unet, text_encoder) for "
                     "init=scratch; start from configs/finetune/digits_scratch.py", "...")
  from synth_jax.diffusion import tiny
  defaults = tiny.tiny_configs()  # the keys' types: diffusers would read "no" as true
  for part in ("vae", "unet", "text_encoder"):
    for k, v in sc[part].items():
      key = f"scratch.{part}.{k}"
      if isinstance(defaults[part].get(k), bool) and not isinstance(v, bool):
        raise checks.bad(key, v, "must be true or false", defaults[part][k])
      if isinstance(v, bool):
        continue
      if isinstance(v, int) and not 1 <= v <= 65536:
        raise checks.bad(key, v, "must be in [1, 65536]", 32)
      if k == "block_out_channels" and (not isinstance(v, (list, tuple)) or not v or not all(
          isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 65536 for c in v)):
        raise checks.bad(key, v, "must be a list of channel counts", "'(32, 64)'")
    groups = sc[part].get("norm_num_groups")
    if isinstance(groups, int) and any(c % groups for c in sc[part].get("block_out_channels", ())):
      raise checks.bad(f"scratch.{part}.norm_num_groups", groups,
                       f"does not divide block_out_channels={tuple(sc[part].block_out_channels)}", 8)
  heads = sc.text_encoder.get("num_attention_heads")
  if isinstance(heads, int) and sc.text_encoder.get("hidden_size", heads) % heads:
    raise checks.bad("scratch.text_encoder.num_attention_heads", heads,
                     f"does not divide hidden_size={sc.text_encoder.hidden_size}", 4)


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
  finished = os.path.exists(os.path.join(out, "model_index.json"))
  if finished and int(config.steps) > 0 and _exported_steps(workdir) >= int(config.steps):
    log.info("%s exists: fine-tuning already finished", out)
    return out
  mesh = sharding.make_mesh(config.mesh)
  base = base_model(config, mesh, workdir)
  pipe = loading.load_pipeline(base)
  data = finetune_data.load(config, pipe, mesh, workdir)
  total = total_steps(config, data)
  if finished and _exported_steps(workdir) >= total:  # a length in examples or epochs
    log.info("%s exists: fine-tuning already finished", out)
    return out
  trainer = finetune_step.Trainer(config, pipe, mesh)
  mngr = checkpoint_integrity.checkpoint_manager(workdir, int(config.keep_checkpoints))
  meta = _meta(config, trainer)
  start = 0
  if mngr.latest_step() is not None:
    start = int(mngr.latest_step())
    state = restore(mngr, start, trainer, meta)
    log.info("resuming finetune at step %d", start)
  else:
    state = trainer.init_state()
  preview = Preview(config, pipe, data, workdir)
  bar = runs.progress(total=total, initial=start, desc="finetune", unit="step")
  losses = []
  t0 = time.perf_counter()
  for step in range(start, total):
    if hosts.any_host(runs.should_stop()):  # every host saves the same step
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


def total_steps(config, data) -> int:
  """The run's length by `config.steps_from`'s rule: steps, else examples, else epochs of the
  training images (batches are drawn with replacement; an epoch is len(images) examples)."""
  return config_lib.steps_from(config, examples_per_epoch=len(data.labels),
                               batch_size=int(config.batch_size))


def _exported_steps(workdir: str) -> int:
  """Steps of the exported pipeline (finetune_log.json); a rerun with more steps continues
  (checks.MAY_GROW). A log from before the field existed counts as finished."""
  try:
    with open(os.path.join(workdir, "finetune_log.json")) as f:
      return int(json.load(f)["steps"])
  except (OSError, ValueError, KeyError):
    return 2**62


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
    files.write_bytes(os.path.join(self.workdir, name),
                      generate_finish.contact_sheet(list(images), cols=8))


