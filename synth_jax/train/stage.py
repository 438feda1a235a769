"""`synth-jax train`: methods as plans of training phases over one trainer (configs/train/base.py).

  results = train(config)   # under config.workdir: checkpoints/, metrics.jsonl, results.json

A method is a list of phases (`plan(config)`); each phase has its data (real / synthetic / mix /
paired), its optimizer settings (config.phase1 or config.phase2), its Mixup setting and whether
the head is re-initialised before it. A rerun resumes from the latest checkpoint, across phase
boundaries; a finished run (results.json present) is a no-op.

`train` reads in three steps: where to resume (`resume_point`), each remaining phase
(`run_phase`), and the record of what ran (`record_results`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from typing import Any, Callable

import jax
import numpy as np

from synth_jax import faults, files, runs, sharding, streams
from synth_jax.config import ConfigDict, dtype_from, steps_from, to_dict
from synth_jax.errors import ConfigError
from synth_jax.train import loop, state as state_lib, steps as steps_lib
from synth_jax.train.checks import METHODS  # one list, checked before work

log = logging.getLogger(__name__)
MIXUP_DEFAULT = 0.2  # ours: the paper's Mixup alpha is NOT FOUND (facts.md 1.5)


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase of a method."""
  data: str          # "real" | "synthetic" | "mix" | "paired"
  config_key: str    # "phase1" | "phase2": its optimizer and length settings
  mixup_alpha: float
  reinit_head: bool  # re-initialise the classifier before this phase


def plan(config) -> list[Phase]:
  """The method's phases with their Mixup and head-reinit settings resolved."""
  m = config.method
  if m not in METHODS:
    raise ConfigError(f"config.method={m!r} is unknown; use one of {', '.join(METHODS)}")

  def alpha(key, default):
    a = config[key].mixup_alpha
    return float(default if a is None else a)

  if m in ("vanilla", "mix", "synthetic_only", "auxbn"):
    data = {"vanilla": "real", "mix": "mix", "synthetic_only": "synthetic", "auxbn": "paired"}[m]
    return [Phase(data, "phase2", alpha("phase2", 0.0), False)]
  # `bridged` is the method as issue 9 and the paper's Bridged++ define it (FC reinit + phase-1
  # Mixup); `bridged_plain` and `bridged_fc` are the paper's two ablation rows without them.
  reinit = m != "bridged_plain" if config.reinit_head is None else bool(config.reinit_head)
  phase1_alpha = alpha("phase1", MIXUP_DEFAULT if m in ("bridged", "bridged++") else 0.0)
  return [Phase("synthetic", "phase1", phase1_alpha, False),
          Phase("real", "phase2", alpha("phase2", 0.0), reinit)]


def resolve(config) -> dict:
  """What one point would run, from its config alone (no data, weights or device is touched):
  the plan, splits the builder writes, the model and AuxBN settings, the init and its input
  normalisation. `sweep --print-only` calls it on every point; a bad point is a one-line error."""
  from synth_jax.data import registry
  from synth_jax.models import input_norm
  phases = plan(config)
  train_split, test_split = splits(config)
  spec = _registry_spec(config)
  if spec is not None:
    registry.check_split(spec.name, train_split)
    registry.check_split(spec.name, test_split)
  for name in list(config.get("extra_eval", None) or ()):
    registry.check_split(name, registry.get(name).eval_split)
  domains = ("real", "synthetic") if config.method == "auxbn" else ("real",)
  state_lib.model_variant(config, domains)
  if not str(config.get("init") or ""):
    state_lib.check_init(config)  # the empty-init error
  if any(p.data != "real" for p in phases) and not config.synthetic:
    raise ConfigError(f"method {config.method!r} needs synthetic images; pass --config.synthetic=DIR")
  norm = input_norm.for_checkpoint(str(config.init), config.init_format, config.model)
  return {"phases": [p.data for p in phases], "splits": [train_split, test_split],
          "init": str(config.init), "init_format": config.init_format,
          "input_norm": norm.to_dict(), "synthetic": config.synthetic if len(phases) > 1 or
          phases[0].data != "real" else ""}


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
      counts = np.bincount(syn.split.labels(), minlength=len(syn.split.class_names))
      if counts.min() < config.volume:  # a volume axis silently capped would plot a wrong x
        raise ConfigError(f"config.volume={config.volume} but {config.synthetic!r} has only "
                          f"{int(counts.min())} images of class {int(counts.argmin())}; generate "
                          "more per class or lower volume")
      syn = dataclasses.replace(syn, indices=sources.few_shot_indices(
          syn.split.labels(), config.volume, config.seed, stream="synthetic_volume"))
  return real_stream, syn, test


def phase_dataset(config, phase: Phase, index: int, real, syn, batch_size: int | None = None):
  """(grain IterDataset, examples per epoch) for one phase (`batch_size`: its capped batch)."""
  from synth_jax.data import pipeline
  kw = dict(augment=config.augment.to_dict(), workers=config.workers, phase=index)
  bs, seed = batch_size or config.batch_size, int(config.seed)
  if phase.data == "real":
    return pipeline.make_train_dataset(real, bs, seed, **kw), _size(real)
  if phase.data == "synthetic":
    return pipeline.make_train_dataset(syn, bs, seed, **kw), _size(syn)
  if phase.data == "mix":
    r = float(config.mix_ratio)
    if not 0.0 <= r <= 1.0:
      raise ConfigError(f"config.mix_ratio={r} must be in [0, 1] (synthetic fraction)")
    return pipeline.make_train_dataset([real, syn], bs, seed, weights=[1 - r, r], **kw), _size(real)
  n_real, n_syn = _domain(config)
  return pipeline.make_paired_dataset(real, syn, n_real, n_syn, seed, **kw), _size(real)


def phase_steps(phase_cfg, examples_per_epoch: int, batch_size: int) -> int:
  """Steps of one phase (`config.steps_from`'s rule: steps, else examples, else epochs); the
  trainer itself uses synth_jax.train.schedule (real-image epochs, step floor, batch cap)."""
  return steps_from(phase_cfg, examples_per_epoch=examples_per_epoch, batch_size=batch_size,
                    what="a training phase (phaseN.steps, phaseN.examples or phaseN.epochs)")


def phase_sizes(config, phases, real, syn, mesh) -> tuple[list[int], list[int]]:
  """(batch size, steps) per phase under synth_jax.train.schedule's rules."""
  from synth_jax.train import schedule
  sizes = {"real": _size(real), "synthetic": _size(syn) if syn is not None else 0}
  batches, counts = [], []
  for p in phases:
    n = sizes.get(p.data, sizes["real"])  # mix and paired: epochs over the real images
    bs = schedule.phase_batch(config, p.data, n, sharding.data_parallel_size(mesh))
    batches.append(bs)
    counts.append(schedule.phase_steps(config, config[p.config_key], p.data, n, bs))
  return batches, counts


def _size(stream) -> int:
  return len(stream.indices) if stream.indices is not None else len(stream.split)


@dataclasses.dataclass
class Trainer:
  """What every phase of one `train` call shares: the plan, the model, the mesh, the writers."""
  config: ConfigDict
  phases: list[Phase]
  datasets: list            # (grain IterDataset, examples per epoch) per phase
  counts: list[int]         # steps per phase
  model: Any
  num_classes: int
  dtype: Any
  mesh: Any
  shardings: Any            # of the params
  mngr: Any                 # orbax CheckpointManager
  recorder: loop.Recorder
  evaluate: Callable        # (params, batch_stats) -> metrics
  batches: list = dataclasses.field(default_factory=list)  # batch size per phase (schedule.py)
  recalibrate: Callable | None = None  # (params, batch_stats) -> batch_stats on real images
  extra_evals: dict = dataclasses.field(default_factory=dict)  # name -> (params, stats) -> metrics

  @property
  def offsets(self) -> list[int]:
    """Global step of each phase's step 0 (checkpoints are numbered by the global step)."""
    return np.concatenate([[0], np.cumsum(self.counts)]).astype(int).tolist()


@dataclasses.dataclass
class ResumePoint:
  """Where a (re)run starts: the first phase to run and the checkpoint to restore into it."""
  phase: int = 0
  step: int | None = None   # checkpoint (global step) to restore, None = start the phase fresh
  phase_done: bool = False  # that checkpoint is its phase's final one (only evaluation was lost)
  records: list = dataclasses.field(default_factory=list)  # finished phases, for results.json


def resume_point(mngr) -> ResumePoint:
  """From the latest checkpoint's meta: its phase, and the records of the phases before it."""
  latest = mngr.latest_step()
  if latest is None:
    return ResumePoint()
  meta = loop.read_meta(mngr, latest)
  log.info("resuming from checkpoint %d (phase %d, step %d, done=%s)", latest, meta["phase"],
           meta["phase_step"], meta["phase_done"])
  return ResumePoint(int(meta["phase"]), latest, bool(meta["phase_done"]),
                     list(meta.get("phases", [])))


def run_phase(t: Trainer, i: int, params, stats, resume: ResumePoint | None, records: list):
  """Trains phase i from `params`/`stats` (or from `resume`'s checkpoint); returns its state."""
  config, phase = t.config, t.phases[i]
  batch_size = t.batches[i] if t.batches else config.batch_size
  tx = state_lib.make_optimizer(config, config[phase.config_key], t.counts[i])
  state_sh = state_lib.state_shardings(params, stats, tx, t.shardings, t.mesh)
  state = state_lib.TrainState.create(params, stats, tx, state_sh)  # these weights, fresh optimizer
  if resume is not None and resume.phase_done:  # killed before the next phase's first checkpoint
    return loop.restore(t.mngr, resume.step, state)
  iterator = iter(t.datasets[i][0])
  try:
    if resume is not None:
      state = loop.restore(t.mngr, resume.step, state, iterator)
    if int(state.step) == 0 and phase.reinit_head:
      head = _reinit(state.params, streams.key(config.seed, "head_reinit", i))
      state = state.replace(params=jax.device_put(head, t.shardings))
    run = loop.PhaseRun(
        index=i, name=phase.data, steps=t.counts[i], offset=t.offsets[i],
        batch_size=batch_size,
        train_step=steps_lib.make_train_step(
            t.model, tx, t.num_classes, mixup_alpha=phase.mixup_alpha,
            cutmix_alpha=float(config[phase.config_key].cutmix_alpha),
            label_smoothing=config.label_smoothing, dtype=t.dtype, norm=_norm_of(config),
            # Paired batches route each row by its own domain id (the pipeline's "domain"),
            # not by position: on several hosts the global batch interleaves hosts' halves.
            domain="batch" if phase.data == "paired" else None,
            state_shardings=state_sh, metrics_sharding=sharding.replicated(t.mesh),
            host_order=_host_order(config, phase, batch_size)),
        rng=streams.key(config.seed, "train_step", i),
        log_every=config.log_every, checkpoint_every=config.checkpoint_every,
        eval_every=config.eval_every, history=list(records),
        evaluate=lambda s: {f"eval/{k}": v for k, v in t.evaluate(s.params, s.batch_stats).items()
                            if k != "per_class"})
    return loop.run_phase(run, state, iterator, t.mesh, t.mngr, t.recorder)
  finally:  # stop this phase's grain worker processes before the next phase starts its own
    _close(iterator)


def _host_order(config, phase: Phase, batch_size: int):
  """The pipeline's row layout on several processes (host p feeds rows p::N of each stream),
  for Mixup/CutMix to pair rows as one process would; None on one process."""
  from synth_jax.data import mixup
  hosts = jax.process_count()
  if hosts == 1:
    return None
  if phase.data == "paired":
    n_real, n_syn = _domain(config)
    return mixup.host_order((n_real // hosts, n_syn // hosts), hosts)
  return mixup.host_order((int(batch_size) // hosts,), hosts)


def phase_record(t: Trainer, i: int, ev: dict) -> dict:
  from synth_jax.train import schedule
  phase = t.phases[i]
  bs = t.batches[i] if t.batches else t.config.batch_size
  # images_seen makes the methods' real-image budgets comparable in results.json (point 9).
  return {"phase": i, "data": phase.data, "steps": int(t.counts[i]), "batch_size": int(bs),
          "images_seen": schedule.images_seen(t.config, phase.data, int(t.counts[i]), bs),
          "bn_recalibrated": bool(ev.get("bn_recalibrated", False)),
          "mixup_alpha": phase.mixup_alpha, "reinit_head": phase.reinit_head,
          **{k: ev[k] for k in ("top1", "top5", "mean_per_class")}}


def record_results(t: Trainer, records: list, ev: dict, class_names, path: str) -> dict:
  """results.json: the last phase's evaluation, every phase's record, and the config."""
  config = t.config
  results = {"method": config.method, "dataset": config.dataset, "seed": config.seed,
             "shots": config.shots, "volume": config.volume, "model": config.model,
             "num_classes": t.num_classes, "steps": t.counts, "phases": records,
             "extra_eval": {k: {m: v[m] for m in ("top1", "top5", "mean_per_class", "num_examples")}
                            for k, v in ev.get("extra_eval", {}).items()},
             "input_norm": {"mean": list(config.augment.mean), "std": list(config.augment.std),
                            "source": config.get("input_norm_source", "")},
             "top1": ev["top1"], "top5": ev["top5"], "mean_per_class": ev["mean_per_class"],
             "per_class": dict(zip(class_names, ev["per_class"])),
             "process_count": jax.process_count(), "device_count": jax.device_count(),
             "config": to_dict(config)}
  files.write_json(path, results)
  return results


def build(config, workdir: str):
  """(Trainer, real Stream, params, batch_stats): everything before the first phase runs."""
  from synth_jax.data import pipeline
  phases = plan(config)
  state_lib.check_init(config)  # before any data is opened: no silent random init
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(mesh, config.batch_size)
  sharding.check_batch(mesh, config.eval_batch_size, "eval_batch_size")
  real, syn, test = open_data(config, any(p.data != "real" for p in phases))
  num_classes = len(real.split.class_names)
  domains = ("real", "synthetic") if config.method == "auxbn" else ("real",)
  place = lambda tree: sharding.logical_shardings(tree, mesh, fsdp=config.fsdp)  # noqa: E731
  model, params, stats = state_lib.build_model(config, num_classes, domains, place=place)
  norm = _input_norm(config)
  dtype = dtype_from(config, allowed=("float32", "bfloat16"))
  batches, counts = phase_sizes(config, phases, real, syn, mesh)
  datasets = [phase_dataset(config, p, i, real, syn, bs)
              for i, (p, bs) in enumerate(zip(phases, batches))]
  eval_ds = pipeline.make_eval_dataset(test, config.eval_batch_size,
                                       augment=config.augment.to_dict(), workers=config.workers)
  eval_step = steps_lib.make_eval_step(model, num_classes, dtype, norm=norm)
  shardings = place(params)
  params = jax.device_put(params, shardings)
  stats = jax.device_put(stats, sharding.replicated(mesh))
  t = Trainer(config=config, phases=phases, datasets=datasets, counts=counts, model=model,
              num_classes=num_classes, dtype=dtype, mesh=mesh, shardings=shardings,
              mngr=loop.checkpoint_manager(workdir, config.keep_checkpoints),
              recorder=loop.Recorder(workdir, config.tensorboard),
              evaluate=lambda p, s: loop.evaluate(eval_step, p, s, eval_ds, mesh, num_classes),
              batches=batches, recalibrate=_recalibrator(config, phases, model, real, mesh, dtype),
              extra_evals=_extra_evals(config, model, real, num_classes, dtype, norm, mesh))
  return t, real, params, stats


def train(config: ConfigDict) -> dict:
  """Runs (or resumes) every phase of config.method; returns and writes results.json."""
  # build() resolves settings into the config (input normalisation from the weights); on a copy,
  # so the caller's config stays the one run_stage recorded and a rerun with it is not refused
  config = copy.deepcopy(config)
  workdir = runs.workdir(config)
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    log.info("%s exists: training already finished", results_path)
    with open(results_path) as f:
      return json.load(f)
  t, real, params, stats = build(config, workdir)
  start = resume_point(t.mngr)
  records, ev = list(start.records), None
  for i in range(start.phase, len(t.phases)):
    # The checkpoint is restored once, into its own phase; later phases start from the weights
    # this process trains (restoring again would replay the finished phase instead of the next).
    state = run_phase(t, i, params, stats, start if i == start.phase and start.step is not None
                      else None, records)
    faults.point("phase_end")  # the phase's final checkpoint exists, its evaluation does not
    recal = t.recalibrate is not None and i == len(t.phases) - 1
    if recal:  # the final evaluation normalises real images with real statistics (point 1)
      state = state.replace(batch_stats=t.recalibrate(state.params, state.batch_stats))
    ev = dict(t.evaluate(state.params, state.batch_stats), bn_recalibrated=recal)
    if i == len(t.phases) - 1 and t.extra_evals:  # out-of-domain sets (Yu et al.), final only
      ev["extra_eval"] = {k: f(state.params, state.batch_stats) for k, f in t.extra_evals.items()}
    t.recorder.write(t.offsets[i + 1], {f"eval/{k}": v for k, v in ev.items()
                                        if k not in ("per_class", "bn_recalibrated", "extra_eval")})
    log.info("phase %d (%s): top-1 %.4f top-5 %.4f", i, t.phases[i].data, ev["top1"], ev["top5"])
    records.append(phase_record(t, i, ev))
    params, stats = state.params, state.batch_stats
  t.mngr.close()
  return record_results(t, records, ev, real.split.class_names, results_path)


def _extra_evals(config, model, real, num_classes, dtype, norm, mesh) -> dict:
  """config.extra_eval (registry names, e.g. imagenet_sketch, imagenet_r): each evaluated on
  its own eval split with labels mapped into the training classes by name; a set covering a
  subset (ImageNet-R: 200 of 1k) predicts among its classes only, the usual protocol."""
  from synth_jax.data import pipeline, registry, sources
  out = {}
  for name in list(config.get("extra_eval", None) or ()):
    spec = registry.get(name)
    split = registry.load(name, spec.eval_split, data_dir=config.data_dir or "~/tensorflow_datasets")
    lmap = sources.label_map(split.class_names, real.split.class_names, what=f"extra_eval {name!r}",
                             normalize=True)
    mask = np.zeros(num_classes, bool)
    mask[lmap] = True
    ds = pipeline.make_eval_dataset(split, config.eval_batch_size, augment=config.augment.to_dict(),
                                    label_map=lmap, workers=config.workers)
    step = steps_lib.make_eval_step(model, num_classes, dtype, norm=norm,
                                    class_mask=None if mask.all() else mask)
    out[name] = (lambda st, d: lambda p, s: loop.evaluate(st, p, s, d, mesh, num_classes))(step, ds)
  return out


def _input_norm(config):
  """Sets config.augment.mean/std to the checkpoint's (models.input_norm) unless both are set;
  the pipelines (host normalisation) and train/eval steps (uint8 on device) then use them."""
  from synth_jax.models import input_norm
  if config.augment.get("mean") is not None and config.augment.get("std") is not None:
    config.input_norm_source = "config.augment.mean/std"
  else:
    n = input_norm.for_checkpoint(str(config.init), config.init_format, config.model)
    config.augment.mean, config.augment.std = list(n.mean), list(n.std)
    config.input_norm_source = n.source
  return _norm_of(config)


def _norm_of(config):
  return tuple(config.augment.mean), tuple(config.augment.std)


def _recalibrator(config, phases, model, real, mesh, dtype):
  """(params, stats) -> stats re-estimated on real training images, or None when off.

  config.bn_recalibrate None = the method's default: on when a real phase follows a synthetic
  one (bridged*), so the final BN statistics are real-domain; off for single-phase methods."""
  from synth_jax.data import pipeline
  from synth_jax.train import bn_recalib
  on = config.get("bn_recalibrate", None)
  if on is None:
    on = len(phases) > 1 and phases[-1].data == "real"
  if not on:
    return None

  def fn(params, stats):
    n, dp = _size(real), sharding.data_parallel_size(mesh)
    bs = min(int(config.batch_size), max(dp, n // dp * dp))
    batches = max(1, min(-(-n // bs), int(config.bn_recalibrate_images) // bs))
    kw = dict(augment=config.augment.to_dict(), workers=config.workers, phase=len(phases))
    it = iter(pipeline.make_train_dataset(real, bs, int(config.seed), **kw))
    try:
      return bn_recalib.recalibrate(model, params, stats, it, mesh, batches, dtype, _norm_of(config))
    finally:
      _close(it)
  return fn


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

