"""`synth-jax train`: methods as stage plans over one trainer (see configs/train/base.py).

  results = train(config)   # under config.workdir: checkpoints/, metrics.jsonl, results.json

A method is a list of stages (`plan(config)`); each stage has its data (real / synthetic / mix /
paired), its optimizer (config.stage1 or config.stage2), its Mixup setting and whether the head is
re-initialised before it. A rerun resumes from the latest checkpoint, across stage boundaries; a
finished run (results.json present) is a no-op.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import faults, files, runs, sharding
from synth_jax.config import ConfigDict, steps_from, to_dict
from synth_jax.errors import ConfigError
from synth_jax.train import loop, state as state_lib, steps as steps_lib

log = logging.getLogger(__name__)
METHODS = ("vanilla", "mix", "synthetic_only", "bridged", "bridged++", "bridged_plain", "bridged_fc",
           "auxbn")
MIXUP_DEFAULT = 0.2  # ours: the paper's Mixup alpha is NOT FOUND (facts.md 1.5)


@dataclasses.dataclass(frozen=True)
class StageSpec:
  name: str          # data: "real" | "synthetic" | "mix" | "paired"
  cfg_key: str       # "stage1" | "stage2"
  mixup_alpha: float
  reinit_head: bool  # re-initialise the classifier before this stage


def plan(config) -> list[StageSpec]:
  """The method's stages with their Mixup and head-reinit settings resolved."""
  m = config.method
  if m not in METHODS:
    raise ConfigError(f"config.method={m!r} is unknown; use one of {', '.join(METHODS)}")

  def alpha(key, default):
    a = config[key].mixup_alpha
    return float(default if a is None else a)

  if m in ("vanilla", "mix", "synthetic_only", "auxbn"):
    data = {"vanilla": "real", "mix": "mix", "synthetic_only": "synthetic", "auxbn": "paired"}[m]
    return [StageSpec(data, "stage2", alpha("stage2", 0.0), False)]
  # `bridged` is the method as issue 9 and the paper's Bridged++ define it (FC reinit + stage-1
  # Mixup); `bridged_plain` and `bridged_fc` are the paper's two ablation rows without them.
  reinit = m != "bridged_plain" if config.reinit_head is None else bool(config.reinit_head)
  stage1_alpha = alpha("stage1", MIXUP_DEFAULT if m in ("bridged", "bridged++") else 0.0)
  return [StageSpec("synthetic", "stage1", stage1_alpha, False),
          StageSpec("real", "stage2", alpha("stage2", 0.0), reinit)]


def _registry_spec(config):
  """The registry entry of config.dataset, or None when it is a dataset directory."""
  from synth_jax.data import registry
  if not config.dataset:
    raise ConfigError("config.dataset is empty; pass a dataset directory or a registry name")
  if os.path.isdir(os.path.expanduser(config.dataset)):
    return None
  return registry.get(config.dataset)


def splits(config) -> tuple[str, str]:
  """(train split, test split): config.train_split / test_split, where '' means the registry
  entry's own (aircraft trains on trainval, food101 tests on validation, ...), or train / test
  for a dataset directory."""
  spec = _registry_spec(config)
  default = ("train", "test") if spec is None else (spec.train_split, spec.eval_split)
  return config.train_split or default[0], config.test_split or default[1]


def _open(config, split: str):
  from synth_jax.data import registry, sources
  spec = _registry_spec(config)
  if spec is None:
    return sources.open_split(config.dataset, split)
  manual = os.path.expanduser(config.get("manual_dir") or "")
  if spec.tfds_name is None and spec.manual and not manual:
    raise ConfigError(f"dataset {spec.name!r} is built from files you download; pass "
                      "--config.manual_dir=FOLDER holding them (see synth_jax/data/manual.py)")
  # Paper configs name one folder per dataset (~/downloads/{dataset}); for a dataset tfds can
  # fetch itself a missing folder means "none", not the manual builder on an empty folder.
  if manual and spec.tfds_name is not None and not os.path.isdir(manual):
    manual = ""
  return registry.load(spec.name, split, data_dir=config.data_dir or "~/tensorflow_datasets",
                       manual_dir=manual or None)


def open_data(config, needs_synthetic: bool):
  """(real train Stream, synthetic Stream | None, test Split)."""
  from synth_jax.data import pipeline, sources, synthetic
  train_split, test_split = splits(config)
  real = _open(config, train_split)
  test = _open(config, test_split)
  idx = None
  if config.shots and config.shots > 0:
    idx = sources.few_shot_indices(real.labels(), config.shots, config.seed,
                                   num_classes=len(real.class_names))
  real_stream = pipeline.Stream(real, indices=idx)
  syn = None
  if needs_synthetic:
    if not config.synthetic:
      raise ConfigError(f"method {config.method!r} needs synthetic images; pass "
                        "--config.synthetic=DIR (the generate stage's dataset)")
    syn = synthetic.open_synthetic(config.synthetic, real.class_names)
    if config.volume and config.volume > 0:
      syn = dataclasses.replace(syn, indices=sources.few_shot_indices(
          syn.split.labels(), config.volume, config.seed))
  return real_stream, syn, test


def stage_dataset(config, spec: StageSpec, index: int, real, syn):
  """(grain IterDataset, examples per epoch) for one stage."""
  from synth_jax.data import pipeline
  seed = int(config.seed) * 1000 + index
  kw = dict(augment=config.augment.to_dict(), workers=config.workers)
  bs = config.batch_size
  if spec.name == "real":
    return pipeline.make_train_dataset(real, bs, seed, **kw), _size(real)
  if spec.name == "synthetic":
    return pipeline.make_train_dataset(syn, bs, seed, **kw), _size(syn)
  if spec.name == "mix":
    r = float(config.mix_ratio)
    if not 0.0 <= r <= 1.0:
      raise ConfigError(f"config.mix_ratio={r} must be in [0, 1] (synthetic fraction)")
    return pipeline.make_train_dataset([real, syn], bs, seed, weights=[1 - r, r], **kw), _size(real)
  n_real, n_syn = _domain(config)
  return pipeline.make_paired_dataset(real, syn, n_real, n_syn, seed, **kw), _size(real)


def stage_steps(stage_cfg, examples_per_epoch: int, batch_size: int) -> int:
  """Steps of one stage: `steps` if > 0, else `examples` if > 0, else `epochs` (so that
  `--config.stage2.steps=500` overrides the default epochs without unsetting them)."""
  for key in ("steps", "examples", "epochs"):
    value = stage_cfg.get(key)
    if value is not None and value > 0:
      return steps_from(ConfigDict({f"s_{key}": value}), "s", batch_size=batch_size,
                        examples_per_epoch=examples_per_epoch)
  raise ConfigError("a stage has no length; set stageN.steps, stageN.epochs or stageN.examples > 0")


def _size(stream) -> int:
  return len(stream.indices) if stream.indices is not None else len(stream.split)


def train(config: ConfigDict) -> dict:
  """Runs (or resumes) every stage of config.method; returns and writes results.json."""
  from synth_jax.data import pipeline
  workdir = runs.workdir(config)
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    log.info("%s exists: training already finished", results_path)
    with open(results_path) as f:
      return json.load(f)
  stages = plan(config)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(mesh, config.batch_size)
  sharding.check_batch(mesh, config.eval_batch_size, "eval_batch_size")
  real, syn, test = open_data(config, any(s.name != "real" for s in stages))
  num_classes = len(real.split.class_names)
  domains = ("real", "synthetic") if config.method == "auxbn" else ("real",)
  model, params, stats = state_lib.build_model(config, num_classes, domains)
  dtype = jnp.bfloat16 if config.bf16 else jnp.float32
  datasets = [stage_dataset(config, s, i, real, syn) for i, s in enumerate(stages)]
  counts = [stage_steps(config[s.cfg_key], n, config.batch_size) for s, (_, n) in zip(stages, datasets)]
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
  eval_ds = pipeline.make_eval_dataset(test, config.eval_batch_size,
                                       augment=config.augment.to_dict(), workers=config.workers)
  eval_step = steps_lib.make_eval_step(model, num_classes, dtype)
  evaluate = lambda p, s: loop.evaluate(eval_step, p, s, eval_ds, mesh, num_classes)  # noqa: E731
  shardings = _param_shardings(config, params, mesh)
  params = jax.device_put(params, shardings)
  stats = jax.device_put(stats, sharding.replicated(mesh))
  mngr = loop.checkpoint_manager(workdir, config.keep_checkpoints)
  recorder = loop.Recorder(workdir, config.tensorboard)
  seed_key = jax.random.key(config.seed)

  # Where to start: the latest checkpoint's stage (a finished stage -> the next one).
  first, resume_step, meta = 0, None, None
  latest = mngr.latest_step()
  if latest is not None:
    meta = loop.read_meta(mngr, latest)
    first, resume_step = int(meta["stage"]), latest
    log.info("resuming from checkpoint %d (stage %d, step %d, done=%s)", latest, first,
             meta["stage_step"], meta["stage_done"])
  # Records of stages finished before this process started travel in the checkpoints' meta.
  per_stage = list(meta.get("stages", [])) if meta else []
  ev = None
  for i, spec in enumerate(stages):
    if i < first:
      continue
    tx = state_lib.make_optimizer(config, config[spec.cfg_key], counts[i])
    state = state_lib.TrainState.create(params, stats, tx, mesh)  # these weights, a fresh optimizer
    # The checkpoint is restored once, into its own stage; later stages start from the weights
    # this process trains (restoring again would replay the finished stage instead of the next).
    if resume_step is not None and meta["stage_done"]:  # killed before the next one's checkpoint
      state = loop.restore(mngr, resume_step, state)
    else:
      iterator = iter(datasets[i][0])
      try:
        if resume_step is not None:
          state = loop.restore(mngr, resume_step, state, iterator)
        if int(state.step) == 0 and spec.reinit_head:
          head_rng = jax.random.fold_in(jax.random.fold_in(seed_key, i), 2)
          state = state.replace(params=jax.device_put(_reinit(state.params, head_rng), shardings))
        run = loop.StageRun(
            index=i, name=spec.name, steps=counts[i], offset=offsets[i],
            batch_size=config.batch_size,
            train_step=steps_lib.make_train_step(
                model, tx, num_classes, mixup_alpha=spec.mixup_alpha,
                cutmix_alpha=float(config[spec.cfg_key].cutmix_alpha),
                label_smoothing=config.label_smoothing, dtype=dtype,
                domain=_domain(config) if spec.name == "paired" else None),
            rng=jax.random.fold_in(jax.random.fold_in(seed_key, i), 1),
            log_every=config.log_every, checkpoint_every=config.checkpoint_every,
            eval_every=config.eval_every, history=list(per_stage),
            evaluate=lambda s: {f"eval/{k}": v for k, v in evaluate(s.params, s.batch_stats).items()
                                if k != "per_class"})
        state = loop.run_stage_loop(run, state, iterator, mesh, mngr, recorder)
      finally:  # stop this stage's grain worker processes before the next stage starts its own
        _close(iterator)
    resume_step = None
    faults.point("stage_end")  # the stage's final checkpoint exists, its evaluation does not
    ev = evaluate(state.params, state.batch_stats)
    recorder.write(offsets[i + 1], {f"eval/{k}": v for k, v in ev.items() if k != "per_class"})
    log.info("stage %d (%s): top-1 %.4f top-5 %.4f", i, spec.name, ev["top1"], ev["top5"])
    per_stage.append({"stage": i, "data": spec.name, "steps": int(counts[i]),
                      "mixup_alpha": spec.mixup_alpha, "reinit_head": spec.reinit_head,
                      **{k: ev[k] for k in ("top1", "top5", "mean_per_class")}})
    params, stats = state.params, state.batch_stats
  mngr.close()
  results = {"method": config.method, "dataset": config.dataset, "seed": config.seed,
             "shots": config.shots, "volume": config.volume, "model": config.model,
             "num_classes": num_classes, "steps": counts, "stages": per_stage,
             "top1": ev["top1"], "top5": ev["top5"], "mean_per_class": ev["mean_per_class"],
             "per_class": dict(zip(real.split.class_names, ev["per_class"])),
             "config": to_dict(config)}
  files.write_json(results_path, results)
  return results


def _domain(config) -> tuple[int, int]:
  n_syn = int(round(config.batch_size * config.auxbn_synthetic_fraction))
  return (config.batch_size - n_syn, n_syn)


def _close(iterator) -> None:
  close = getattr(iterator, "close", None)
  if close is not None:
    close()


def _reinit(params, rng):
  from synth_jax import models
  return models.reinit_head(params, rng)


def _param_shardings(config, params, mesh):
  if config.fsdp:
    from synth_jax import models
    return models.logical_shardings(params, mesh)
  return jax.tree.map(lambda _: sharding.replicated(mesh), params)
