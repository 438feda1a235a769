"""`synth-jax prompts`: class names -> prompts.json (templates, LLM+CLIP disambiguation, CD, SD, DSI).

    synth-jax prompts --config configs/prompts/base.py:classes=classes.txt \
        --config.workdir=runs/prompts/cars
    synth-jax prompts --config configs/prompts/yu.py:dataset=cars,llm=answers.json,clip=/models/clip \
        --config.workdir=runs/prompts/cars

Classes are processed in id order; each finished class is written into `<workdir>/prompts.json`
at once (atomically), with its LLM answers and CLIP scores, so an interrupted run resumes without
asking the LLM again for finished classes, and a rerun of a finished run makes no LLM or CLIP call
and rewrites the same bytes. Every random choice comes from (config.seed, class id).
"""
from __future__ import annotations

import logging
import os


from synth_jax import faults, runs, streams
from synth_jax.errors import ConfigError
from synth_jax.prompts import artifact, classnames, disambiguate, diversify, llm, templates

log = logging.getLogger(__name__)


def _seed(seed: int, class_id: int, what: int) -> int:
  """An LLM seed for (run seed, class, request kind): stable across resumes and class subsets."""
  return streams.int_seed(seed, "llm_sample", class_id, what)


def needs_llm(config, strategies) -> bool:
  return ("cd" in strategies or bool(config.disambiguate.enabled) or
          ("sd" in strategies and bool(config.sd.get("from_llm"))))


def validate(config) -> list[str]:
  """Every config mistake before any model or dataset is opened; returns the strategies."""
  from synth_jax import checks
  from synth_jax.checks import Bool, Float, Int, OneOf, Path, Text
  checks.check(config, {
      "seed": Int(0, 2**32 - 1, 0), "class_names": Text(example="classes.txt"),
      "image_folder": Path("dir", example="~/photos"), "dataset": Text(), "data_dir": Text(),
      "manual_dir": Text(), "split": Text(), "domain": Text(),
      **{f"weights.{k}": Float(None, 10**6, 1.0) for k in diversify.KINDS},  # < 0: kind_weights
      "cd.n": Int(1, 1000, 8), "cd.min_items": Int(0, 1000, 3), "cd.template": Text(True),
      "sd.template": Text(True), "sd.from_llm": Bool(), "sd.n": Int(1, 1000, 8),
      "sd.min_items": Int(0, 1000, 3), "dsi.token": Text(example="'<dsi>'", max_len=200),
      "dsi.template": Text(True), "disambiguate.enabled": Bool(), "disambiguate.n": Int(1, 100, 4),
      "disambiguate.images_per_class": Int(1, 10**4, 16), "disambiguate.template": Text(True),
      "disambiguate.clip": Text(), "disambiguate.model_name": Text(),
      "disambiguate.dtype": OneOf(checks.DTYPES, "float32"),
      "disambiguate.batch_size": Int(1, 4096, 32), "llm.kind": OneOf(("", "json", "hf", "http")),
      "llm.path": Text(), "llm.base_url": Text(), "llm.model": Text(), "llm.api_key_env": Text(),
      "llm.timeout": Float(0, 86400, 60, lo_open=True), "llm.temperature": Float(0, 10, 0.0),
      "llm.top_p": Float(0, 1, 1.0, lo_open=True), "llm.max_new_tokens": Int(1, 10**5, 256),
      "llm.retries": Int(0, 100, 3)})
  for key in ("classes", "strategies", "template.extra", "sd.styles"):
    v = checks.get(config, key)
    if v is not None and (not isinstance(v, (list, tuple)) or
                          not all(isinstance(x, str) for x in v)):
      raise checks.bad(key, v, "is not a list of strings", "\"['a', 'b']\"")
  if int(config.sd.min_items) > int(config.sd.n):
    raise ConfigError(f"sd.n={config.sd.n}, sd.min_items={config.sd.min_items}: need "
                      "min_items <= n")
  strategies = diversify.check_strategies(list(config.strategies))
  if needs_llm(config, strategies) and not config.llm.get("kind"):
    raise ConfigError("cd, sd.from_llm and disambiguation need an LLM: set "
                      "--config.llm.kind=json|hf|http "
                      "(and llm.path or llm.base_url)")
  if config.disambiguate.enabled and not config.disambiguate.get("clip"):
    raise ConfigError("disambiguate.enabled needs a CLIP: pass --config.disambiguate.clip=PATH "
                      "(HF CLIP folder or OpenCLIP checkpoint)")
  if "sd" in strategies and not config.sd.from_llm and not list(config.sd.styles):
    raise ConfigError("sd is on but sd.styles is empty; give styles, e.g. "
                      "--config.sd.styles='a sketch,an oil painting'")
  if int(config.cd.n) < 1 or int(config.cd.min_items) > int(config.cd.n):
    raise ConfigError(f"cd.n={config.cd.n}, cd.min_items={config.cd.min_items}: need "
                      "1 <= min_items <= n")
  if int(config.llm.get("retries", 0)) < 0:
    raise ConfigError(f"llm.retries={config.llm.retries} must be >= 0")
  diversify.kind_weights([{"kind": k} for k in strategies], dict(config.weights), "(all)")
  # Every template and the DSI token are checked on a dummy class, before any LLM call.
  diversify.class_prompts(
      "x", strategies, family=config.template.family, extra_templates=list(config.template.extra),
      contexts=["y"], styles=["z"], token=config.dsi.token,
      cd_template=config.cd.template, sd_template=config.sd.template,
      dsi_template=config.dsi.template)
  if (needs_llm(config, strategies) and config.llm.kind == "json" and
      not os.path.isfile(os.path.expanduser(config.llm.path or ""))):
    from synth_jax import checks
    raise checks.bad("llm.path", config.llm.path, "is not an answers .json file", "answers.json")
  return strategies


def _domain_key(config, source) -> str:
  """The registry name that selects dataset suffixes ("cars" -> 'a type of car').

  config.domain if set; else the dataset's registry name, found from config.dataset or from the
  opened dataset's tfds name ("oxford_flowers102" -> "flowers", a `digits` dataset dir -> "digits").
  """
  if config.get("domain"):
    return config.domain
  from synth_jax.data import registry
  for name in (config.get("dataset") or "", source.dataset_name):
    if name in registry.REGISTRY:
      return name
    for spec in registry.REGISTRY.values():
      if spec.tfds_name and name and spec.tfds_name.split("/")[0] == name:
        return spec.name
  return ""


def _identity(backend) -> str:
  return getattr(backend, "identity", None) or type(backend).__name__


class _Lazy:
  """Builds the LLM / CLIP on first use: a rerun with everything cached loads neither."""

  def __init__(self, factory):
    self._factory, self._value = factory, None

  def __call__(self):
    if self._value is None:
      self._value = self._factory()
    return self._value


def _load_clip(cfg):
  from synth_jax.models import clip as clip_lib  # jax model + weights: only when needed
  return clip_lib.load_clip(cfg.clip, cfg.get("dtype", "float32"),
                            model_name=cfg.get("model_name") or None,
                            batch_size=int(cfg.get("batch_size", 32)))


def _llm_list(config, get_llm, cached, class_id, name, kind, prompt, n, min_items, what):
  """(items, record, calls): the cached list if its key matches, else the LLM's."""
  backend = get_llm()
  seed = _seed(config.seed, class_id, what)
  key = artifact.cache_key(_identity(backend), prompt, seed, n, min_items)
  items = None if hasattr(backend, "lookup") else artifact.cached_items(cached, kind, key)
  calls = 0
  if items is None:
    req = llm.ListRequest(kind, name, prompt, n=n, min_items=min_items)
    items, calls = llm.ask_list(backend, req, seed=seed, retries=int(config.llm.retries))
  return items, {"key": key, "items": items}, calls


def build_class(config, strategies, class_id, name, source, get_llm, get_clip, cached) -> dict:
  """One class's prompts.json entry (using and refreshing the caches in `cached`)."""
  dom = _domain_key(config, source)
  domain = templates.DOMAINS.get(dom, "")
  plain = templates.readable(name)
  entry = {"id": class_id, "name": name, "disambiguated": None, "prompt_name": plain}
  llm_rec, calls = {}, 0
  dis = config.disambiguate
  if dis.enabled:
    prompt = disambiguate.meanings_prompt(plain, domain=domain, n=int(dis.n))
    cands, llm_rec["descriptions"], c = _llm_list(
        config, get_llm, cached, class_id, name, "descriptions", prompt, int(dis.n), 1, 0)
    calls += c
    template = dis.get("template") or disambiguate.DEFAULT_TEMPLATE
    k = int(dis.images_per_class)
    key = artifact.cache_key(dis.clip, cands, template, k, int(config.seed))
    choice = artifact.cached_choice(cached, key)
    if choice is None:
      images = source.images(name, k, int(config.seed))
      choice = {**disambiguate.choose(get_clip(), cands, images, template=template,
                                      class_name=name), "key": key}
    entry["disambiguation"] = choice
    entry["disambiguated"] = entry["prompt_name"] = choice["chosen"]
  contexts = []
  if "cd" in strategies:
    prompt = diversify.contexts_prompt(entry["prompt_name"], domain=domain, n=int(config.cd.n))
    contexts, llm_rec["contexts"], c = _llm_list(
        config, get_llm, cached, class_id, name, "contexts", prompt, int(config.cd.n),
        int(config.cd.min_items), 1)
    calls += c
  styles = list(config.sd.styles)
  if "sd" in strategies and config.sd.get("from_llm"):  # Yu et al.: SD prompts come from an LLM
    prompt = diversify.styles_prompt(entry["prompt_name"], n=int(config.sd.n))
    styles, llm_rec["styles"], c = _llm_list(
        config, get_llm, cached, class_id, name, "styles", prompt, int(config.sd.n),
        int(config.sd.min_items), 2)
    calls += c
  entry["prompts"] = diversify.class_prompts(
      entry["prompt_name"], strategies, dataset=dom, family=config.template.family,
      extra_templates=list(config.template.extra), contexts=contexts,
      styles=styles, token=config.dsi.token, cd_template=config.cd.template,
      sd_template=config.sd.template, dsi_template=config.dsi.template)
  if llm_rec:
    entry["llm"] = llm_rec
  entry["_calls"] = calls
  return entry


def prompts(config, *, llm_backend=None, clip_model=None) -> str:
  """Runs the prompts stage; returns the path of prompts.json.

  Args:
    config: the ConfigDict of configs/prompts/base.py.
    llm_backend: an object with `generate(prompt, *, seed)` (and `identity`), used instead of
      config.llm (tests, or Python callers with their own LLM).
    clip_model: an object with `embed_text` / `embed_images`, used instead of loading
      config.disambiguate.clip.
  """
  run_dir = runs.workdir(config)
  strategies = validate(config)
  source = classnames.open_classes(config)
  ids = classnames.subset(source.names, list(config.classes))
  get_llm = _Lazy(lambda: llm_backend or llm.make_backend(config.llm))
  get_clip = _Lazy(lambda: clip_model or _load_clip(config.disambiguate))
  cached = artifact.read_cached(run_dir)
  meta = {"complete": False, "num_classes": len(source.names), "class_names": source.names,
          "strategies": strategies, "weights": dict(config.weights), "seed": int(config.seed),
          "llm": _identity(get_llm()) if needs_llm(config, strategies) else None,
          "clip": config.disambiguate.clip if config.disambiguate.enabled else None,
          "dsi_token": config.dsi.token if "dsi" in strategies else None}
  done, total_calls = [], 0
  bar = runs.progress(ids, desc="prompts", unit="class")
  for class_id in bar:
    if runs.should_stop():
      artifact.write(run_dir, done, meta)
      raise runs.Preempted(f"prompts: {len(done)}/{len(ids)} classes saved in {run_dir}; "
                           "rerun to continue")
    entry = build_class(config, strategies, class_id, source.names[class_id], source, get_llm,
                        get_clip, cached.get(class_id))
    total_calls += entry.pop("_calls")
    done.append(entry)
    meta["complete"] = len(done) == len(ids)
    artifact.write(run_dir, done, meta)  # after each class: a crash loses at most this one
    faults.point("prompts_class")
  path = os.path.join(run_dir, artifact.FILENAME)
  log.info("prompts: %d classes, %d prompts, %d LLM calls -> %s", len(done),
           sum(len(c["prompts"]) for c in done), total_calls, path)
  return path
