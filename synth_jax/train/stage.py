"""`synth-jax train`: one trainer for every method, in big_vision's section order.

  results = train(config)      # dict, also <workdir>/results.json

Sections: mesh -> data -> model -> per stage (optimizer -> state, sharded from eval_shape ->
one jitted train step with donated state -> loop with eval, metrics, checkpoints, SIGTERM) ->
final evaluation -> results.json. A rerun resumes from the newest checkpoint (across the stage
boundary too); a finished run (results.json present) is a no-op.
"""
from __future__ import annotations

import functools
import json
import logging
import os

import jax
import numpy as np

from synth_jax import config as config_lib
from synth_jax import faults, io, runs, sharding
from synth_jax.errors import ConfigError, TrainingError
from synth_jax.train import checkpoint, evaluate, methods, metrics, model as model_lib, optim
from synth_jax.train import steps as steps_lib
from synth_jax.train.data import eval_dataset, open_data, paired_split, train_dataset

log = logging.getLogger(__name__)


def stage_step_config(config, plan: methods.StagePlan, num_classes: int, micro_batch: int) -> steps_lib.StepConfig:
  """The static step hyperparameters of one stage (Mixup only where the method allows it)."""
  s = config[plan.name]
  split = None
  if plan.source == "paired":
    split = paired_split(config, micro_batch)
  return steps_lib.StepConfig(
      num_classes=num_classes,
      mixup_alpha=float(s.get("mixup_alpha", 0.0)) if plan.mixup else 0.0,
      cutmix_alpha=float(s.get("cutmix_alpha", 0.0)) if plan.mixup else 0.0,
      label_smoothing=float(s.get("label_smoothing", 0.0)),
      domain_split=split if jax.process_count() == 1 else None,
      domain_from_batch=plan.source == "paired" and jax.process_count() > 1,
      compute_dtype=model_lib.compute_dtype(config.model),
      accum=int(s.get("grad_accum", 1)))


def stage_steps(config, plan: methods.StagePlan, data) -> int:
  s = config[plan.name]
  return config_lib.steps_from(s, "train", examples_per_epoch=data.size(plan.source),
                               batch_size=int(s.batch_size))


def _micro_batch(config, plan, mesh) -> int:
  s = config[plan.name]
  accum = int(s.get("grad_accum", 1))
  if int(s.batch_size) % accum:
    raise ConfigError(f"{plan.name}.batch_size={s.batch_size} is not a multiple of grad_accum={accum}")
  micro = int(s.batch_size) // accum
  sharding.check_batch(mesh, micro, f"{plan.name}.batch_size / grad_accum")
  return micro


class _Run:
  """What every stage shares: config, mesh, data, model, checkpoints, writer, eval."""

  def __init__(self, config, mesh, data, model, mngr, writer, hooks):
    self.config, self.mesh, self.data, self.model = config, mesh, data, model
    self.mngr, self.writer, self.hooks = mngr, writer, hooks or {}
    dp = sharding.data_parallel_size(mesh)
    self.eval_batch = -(-int(config.eval_batch_size) // dp) * dp
    self.eval_fn = evaluate.make_eval_fn(model, data.num_classes, model_lib.compute_dtype(config.model))
    self.fsdp = mesh.shape["fsdp"] > 1

  def evaluate(self, state, step: int, prefix: str = "eval") -> dict:
    res = evaluate.evaluate(self.eval_fn, state, eval_dataset(self.config, self.data, self.eval_batch),
                            self.mesh, self.data.class_names)
    self.writer.write_scalars(step, {f"{prefix}/top1": res["top1"], f"{prefix}/top5": res["top5"],
                                     f"{prefix}/loss": res["loss"]})
    log.info("step %d %s top-1 %.4f top-5 %.4f", step, prefix, res["top1"], res["top5"])
    return res

  def check_finite(self, state, plan, offset: int, accum: int) -> None:
    bad = int(jax.device_get(state.bad_step))
    if bad >= 0:
      self.mngr.wait_until_finished()
      good = self.mngr.latest_step()
      raise TrainingError(
          f"non-finite loss at step {offset + bad // accum + 1} ({plan.name} micro-step {bad}); "
          f"last good checkpoint: step {good}; lower {plan.name}.lr or set {plan.name}.grad_clip, then rerun")

  def save(self, step, state, it, plan, index, stage_step, done) -> None:
    meta = {"stage_index": index, "stage": plan.name, "stage_step": stage_step, "done": done,
            "method": self.config.method}
    checkpoint.save(self.mngr, step, state, it, meta)


def _train_stage(run: _Run, index: int, plan, state, it, tx, schedule, hp, num_steps: int, offset: int):
  """The loop of one stage: steps, logging, eval every N, checkpoint every N and on SIGTERM."""
  config = run.config
  step_fn = jax.jit(functools.partial(steps_lib.train_step, model=run.model, tx=tx, schedule=schedule, hp=hp),
                    donate_argnums=(0,))
  rng = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), index)
  accum, micro_batch = hp.accum, int(config[plan.name].batch_size) // hp.accum
  micro = int(jax.device_get(state.step))
  total = num_steps * accum
  log_every, eval_every = int(config.log_every_steps), int(config.eval_every_steps)
  ckpt_every = int(config.checkpoint_every_steps)
  bar = runs.progress(total=total * micro_batch, initial=micro * micro_batch, unit="img", unit_scale=True,
                      desc=f"{config.method} {plan.name}")
  while micro < total:
    faults.point(f"train_{plan.name}")
    batch = sharding.shard_batch(next(it), run.mesh)
    state, m = step_fn(state, batch, rng)
    micro += 1
    bar.update(micro_batch)
    if micro % accum:
      continue
    upd = micro // accum
    g = offset + upd
    if upd % log_every == 0 or upd == num_steps:
      run.check_finite(state, plan, offset, accum)
      run.writer.write_scalars(g, {f"train/{k}": v for k, v in jax.device_get(m).items()})
      bar.set_postfix(loss=f"{float(m['loss']):.3f}")
    if eval_every and upd % eval_every == 0 and upd != num_steps:
      run.evaluate(state, g)
    stop = runs.should_stop()
    if (ckpt_every and upd % ckpt_every == 0 and upd != num_steps) or stop:
      run.check_finite(state, plan, offset, accum)
      run.save(g, state, it, plan, index, upd, False)
    if stop:
      run.mngr.wait_until_finished()
      bar.close()
      raise runs.Preempted(f"SIGTERM: checkpoint saved at step {g}; rerun the same command to resume")
  bar.close()
  run.check_finite(state, plan, offset, accum)
  run.save(offset + num_steps, state, it, plan, index, num_steps, True)
  return state


def train(config, hooks: dict | None = None) -> dict:
  """Trains `config.method`; returns (and writes) the results dict.

  hooks (tests): {"stage_start"/"stage_end": fn(stage_name, state, step_config)}.
  """
  workdir = runs.workdir(config)
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    log.info("%s exists: this run is finished", results_path)
    with open(results_path) as f:
      return json.load(f)
  method = methods.get_method(str(config.method))
  hooks = hooks or {}
  # ---- mesh
  mesh = sharding.make_mesh(config.get("mesh"))
  # ---- data
  data = open_data(config, method.needs_synthetic)
  # ---- model
  model = model_lib.build_model(config.model, data.num_classes, method.domains)
  res = int(config.data.resolution)
  abstract_vars = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, res, res, 3), np.float32))
  # ---- checkpoints and metrics
  mngr = checkpoint.manager(workdir, keep=config.get("keep_checkpoints", 2),
                            asynchronous=bool(config.get("async_checkpoints", True)))
  resume_step, meta = checkpoint.latest(mngr)
  if meta is not None and meta.get("method") != config.method:
    raise TrainingError(f"{workdir} holds checkpoints of method {meta.get('method')!r}, not {config.method!r}; "
                        "use another --config.workdir")
  writer = metrics.make_writer(workdir, resume_step)
  run = _Run(config, mesh, data, model, mngr, writer, hooks)
  params = stats = state = None
  offset, stage_steps_done = 0, {}
  for index, plan in enumerate(method.stages):
    num_steps = stage_steps(config, plan, data)
    stage_steps_done[plan.name] = num_steps
    if meta is not None and meta["stage_index"] > index:  # finished before the restart
      offset += num_steps
      continue
    micro_batch = _micro_batch(config, plan, mesh)
    hp = stage_step_config(config, plan, data.num_classes, micro_batch)
    tx, schedule = optim.make_optimizer(config[plan.name], num_steps)
    it = iter(train_dataset(config, data, plan.source, micro_batch, index))
    build = lambda p, b, tx=tx: steps_lib.new_state(p, b, tx)  # noqa: E731
    abstract = jax.eval_shape(build, abstract_vars["params"], abstract_vars.get("batch_stats", {}))
    shardings = steps_lib.state_shardings(abstract, mesh, run.fsdp)
    if meta is not None and meta["stage_index"] == index:  # ---- resume inside (or at the end of) this stage
      done = bool(meta["done"])
      state = checkpoint.restore(mngr, resume_step, checkpoint.abstract_with_shardings(abstract, shardings),
                                 None if done else it)
      log.info("resumed %s at step %d (%s)", plan.name, resume_step, "done" if done else "running")
      meta = None
      if done:
        offset += num_steps
        params, stats = state.params, state.batch_stats
        continue
    else:  # ---- fresh stage: from the previous stage's weights (or the pretrained ones)
      if params is None:
        _, params, stats = model_lib.load_model(config.model, data.num_classes, method.domains, res,
                                                jax.random.PRNGKey(int(config.seed)))
      if plan.reinit_head_before:
        from synth_jax.models import reinit_head
        params = reinit_head(params, jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 7001 + index))
      state = jax.jit(build, out_shardings=shardings)(params, stats)
    if "stage_start" in hooks:
      hooks["stage_start"](plan.name, state, hp)
    state = _train_stage(run, index, plan, state, it, tx, schedule, hp, num_steps, offset)
    if "stage_end" in hooks:
      hooks["stage_end"](plan.name, state, hp)
    params, stats = state.params, state.batch_stats
    offset += num_steps
  mngr.wait_until_finished()
  # ---- final evaluation and results
  final = run.evaluate(state, offset)
  results = {
      "method": str(config.method), "dataset": os.path.basename(os.path.normpath(str(config.data.real))),
      "seed": int(config.seed), "shots": int(config.data.get("shots", -1)),
      "volume": int(config.data.get("volume", -1)), "model": str(config.model.name),
      "top1": final["top1"], "top5": final["top5"], "eval_loss": final["loss"],
      "num_eval_examples": final["num_examples"], "per_class_accuracy": final["per_class_accuracy"],
      "steps": stage_steps_done, "config": config_lib.to_dict(config),
  }
  writer.flush()
  mngr.close()
  if jax.process_index() == 0:
    io.write_json(results_path, results)
  return results
