"""Issue 20, done-when: per stage, hypothesis draws overrides from the config's own keys and types
plus out-of-range, wrong-type, empty, huge and unicode values. Every outcome is a refusal (a
SynthJaxError with one line, what the CLI prints with exit 2) or an accepted config, never another
exception, and the run directory is left exactly as found either way.

Accepted configs are not run: the stage function is replaced by one that stops right after
validation (by raising a refusal itself, which also exercises run_stage's restore), so no jax
compile happens and each stage's cases take about a second. EXAMPLES cases per stage.
"""
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from synth_jax import checks, config as config_lib, runs
from synth_jax.errors import ConfigError, SynthJaxError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = 60
BASES = {  # stage -> (config spec, overrides that make it a runnable config)
    "generate": ("generate/base.py:model=/nonexistent/sd", ["class_names=cat,dog", "batch_size=8"]),
    "invert": ("invert/base.py:model=/nonexistent/sd,dataset=digits", []),
    "prompts": ("prompts/base.py", ["class_names=cat,dog"]),
    "filter": ("filter/base.py:synthetic=SRC,clip=SRC", []),
    "data": ("data/import.py:source=SRC,name=pets", []),
    "train": ("train/base.py:smoke", []),
    "demo": (None, []),
    # ROOT/sd holds a model_index.json, ROOT/sweep a sweep's results.json (see _stage_test)
    "finetune": ("finetune/base.py:model=ROOT/sd,dataset=SRC", []),
    "finetune-scratch": ("finetune/digits_scratch.py:dataset=SRC", []),
    "report": ("synth_jax.report_html:get_config", ["run_dir=ROOT/sweep"]),
}
ODD = st.sampled_from(["", "-1", "0", "1", "-7", "2.5", "1e999", "nan", "-inf", "9" * 400,
                       "abc", "猫\u202e", "[1, 2]", "{'a': 1}", "None", "yes", "x" * 5000,
                       "(", "1,2,3", "/", "../..", "\0"])


class _Validated(ConfigError):
  """Raised in place of the stage's work: validation passed."""


def _load(stage, src, work, overrides=()):
  spec, base = BASES[stage]
  root = os.path.dirname(str(src))
  fill = lambda t: t.replace("SRC", str(src)).replace("ROOT", root)  # noqa: E731
  extra = [f"workdir={work}", *map(fill, base), *overrides]
  if spec is None or ":get_config" in spec:
    import importlib
    module, _, fn = (spec or "synth_jax.demo:get_config").partition(":")
    cfg = getattr(importlib.import_module(module), fn)()
    for item in extra:
      config_lib.apply_override(cfg, item)
    return cfg
  return config_lib.load_config(os.path.join(REPO, "configs", fill(spec)), extra)


def _leaves(cfg, prefix=""):
  for k in cfg.keys():
    v = cfg[k]
    if isinstance(v, config_lib.ConfigDict):
      yield from _leaves(v, f"{prefix}{k}.")
    elif k != "workdir":
      yield f"{prefix}{k}", v


def _typed(value):
  """Values of the key's own type, in and out of any sensible range."""
  if isinstance(value, bool):
    return st.sampled_from(["true", "false", "yes", "no", "1", "0", "maybe"])
  if isinstance(value, int):
    return st.one_of(st.integers(-2**40, 2**40).map(str), st.sampled_from(["0", "-1", "1", "8"]))
  if isinstance(value, float):
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.sampled_from(["0", "0.5", "1", "-0.1"]))
  return st.text(max_size=40)


def _stage_test(stage):
  @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
            suppress_health_check=list(HealthCheck))
  @given(data=st.data())
  def run(tmp_path_factory, data):
    root = tmp_path_factory.mktemp(stage)
    src = root / "src"
    os.makedirs(src / "cat")
    os.makedirs(src / "dog")
    (root / "sd").mkdir()
    (root / "sd" / "model_index.json").write_text("{}")
    (root / "sweep").mkdir()
    (root / "sweep" / "results.json").write_text('{"cells": []}')
    work = root / "run"
    work.mkdir()
    (work / "keep.txt").write_text("before")
    keys = dict(_leaves(_load(stage, src, work)))
    chosen = data.draw(st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=3, unique=True))
    overrides = [f"{k}={data.draw(st.one_of(_typed(keys[k]), ODD))}" for k in chosen]
    before = sorted(os.listdir(work))

    def stop(_):
      raise _Validated("validated")
    try:
      cfg = _load(stage, src, work, overrides)
      runs.run_stage(stage.split("-")[0], stop, cfg)
    except _Validated:
      outcome = "accepted"
    except SynthJaxError as e:
      assert "\n" not in str(e) and str(e), (overrides, str(e))
      outcome = "refused"
    assert sorted(os.listdir(work)) == before and (work / "keep.txt").read_text() == "before", (
        overrides, outcome)
    COUNTS.setdefault(stage, []).append(outcome)
  return run


COUNTS = {}


def _with(cfg, key, value):
  """A copy of cfg with cfg[key] = value of another type (as a Python config file could set it)."""
  d = cfg.to_dict()
  *parents, last = key.split(".")
  node = d
  for p in parents:
    node = node[p]
  node[last] = value
  return config_lib.ConfigDict(d)


@pytest.mark.parametrize("stage", ["data", "demo", "filter", "finetune", "finetune-scratch",
                                   "generate", "invert", "prompts", "report", "train"])
def test_any_override_is_refused_in_one_line_or_accepted_and_the_run_dir_is_untouched(
    stage, tmp_path_factory):
  assert stage in BASES
  _stage_test(stage)(tmp_path_factory)
  outcomes = COUNTS[stage]
  assert len(outcomes) >= EXAMPLES // 2
  assert "refused" in outcomes  # the generator does reach the validators
  print(f"{stage}: {len(outcomes)} cases, {outcomes.count('accepted')} accepted, "
        f"{outcomes.count('refused')} refused")


def test_every_numeric_and_bool_field_has_a_rule():
  """Rule 1's "every numeric field range-checked": each stage's validator covers every int, float
  and bool key of its base config (a new key without a rule fails here)."""
  from synth_jax.diffusion import generate  # noqa: F401  (rules live in the validators)
  from synth_jax.train import checks as train_checks
  cfg = _load("train", "/x", "/tmp/w")
  missing = [k for k, v in _leaves(cfg) if isinstance(v, (int, float, bool)) and not isinstance(
      v, str) and k not in train_checks.RULES and not k.startswith("mesh.")]
  missing += [k for k in ("phase1.steps", "phase1.examples", "reinit_head") if k not in train_checks.RULES]
  assert missing == []
  # every other stage: drive each such key to a huge value (finetune, report: each bool key to a
  # non-bool) and expect a refusal naming it
  for stage in ("generate", "invert", "prompts", "filter", "data", "demo", "finetune",
                "finetune-scratch", "report"):
    for key, value in _leaves(_load(stage, REPO, "/tmp/w")):
      if key.startswith("mesh."):
        continue
      if isinstance(value, bool):  # a bool key refuses a non-bool
        # (scratch.vae/unet/text_encoder too: diffusers/transformers keys, typed by tiny_configs)
        if stage.startswith(("finetune", "report")):
          cfg = _with(_load(stage, REPO, "/tmp/w"), key, "maybe")
          with pytest.raises(SynthJaxError, match=key.replace(".", r"\.")):
            checks.validate(stage.split("-")[0], cfg)
        continue
      if not isinstance(value, (int, float)):
        continue
      huge = "1e300" if isinstance(value, float) else str(10**15)
      cfg = _load(stage, REPO, "/tmp/w", [f"{key}={huge}"])
      with pytest.raises(SynthJaxError) as e:
        checks.validate(stage.split("-")[0], cfg)
      assert key in str(e.value), (stage, key, str(e.value))
  assert math.isfinite(1.0)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_sweep_axes_are_refused_in_one_line_or_every_point_validates(tmp_path_factory, data):
  """sweep: axes drawn from the train config's own keys (typed values, odd values, odd axis
  strings); a refusal is one line and happens before any point runs or any file is written."""
  from synth_jax.train import sweep
  root = tmp_path_factory.mktemp("sweep")
  work = root / "grid"
  keys = dict(_leaves(_load("train", root, work)))
  value = lambda k: data.draw(st.one_of(_typed(keys[k]), ODD))  # noqa: E731
  axis = st.one_of(
      st.sampled_from(sorted(keys)).map(lambda k: f"{k}={value(k)},{value(k)}"),
      st.sampled_from(sorted(keys)).map(lambda k: f"{k}={value(k)}"),
      ODD, st.sampled_from(["seed=", "=1,2", "nosuchkey=1,2", "seed=1,1", "seed=[1, 2]",
                            'model="resnet:basic:1,1,1,1",resnet18']))
  axes = data.draw(st.lists(axis, min_size=1, max_size=3))
  ran = []

  def stop(cfg):
    ran.append(cfg.workdir)
    raise _Validated("validated")
  cfg = _load("train", root, work)
  try:  # stop() fails every point, so an accepted grid ends in "N of N sweep points failed"
    sweep.sweep(cfg, axes, train_fn=stop)
  except SynthJaxError as e:
    assert "\n" not in str(e) and str(e), (axes, str(e))
    if not ran:  # a refusal of the grid comes before any point ran or any file was written
      assert not work.exists(), (axes, str(e))
  outcome = "accepted" if ran else "refused"
  COUNTS.setdefault("sweep", []).append(outcome)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_plan_request_is_refused_in_one_line_or_validates(data):
  """plan: --devices, --chip and overrides of each plannable stage's shape keys, drawn from
  valid and odd values; the outcome is a one-line refusal or a validated plan (not compiled)."""
  from synth_jax.train import plan
  stage = data.draw(st.sampled_from(["generate", "finetune", "invert", "train"]))
  spec = {"generate": "generate/base.py:model=/m", "finetune": "finetune/base.py:model=/m,dataset=d",
          "invert": "invert/base.py:model=/m,dataset=d", "train": "train/base.py:smoke"}[stage]
  cfg = config_lib.load_config(os.path.join(REPO, "configs", spec))
  keys = dict(_leaves(cfg))
  shape_keys = [k for k in ("batch_size", "dtype", "steps", "resolution", "grad_accum", "remat",
                            "model", "augment.resolution") if k in keys]
  chosen = data.draw(st.lists(st.sampled_from(shape_keys), max_size=3, unique=True))
  devices = data.draw(st.one_of(st.integers(-3, 70000), st.sampled_from([True, 1.5, "8", None])))
  chips = data.draw(st.one_of(st.sampled_from(["h100", "v5e,v6e", "", ",", "tpu9", "H100"]), ODD))
  try:
    for k in chosen:
      config_lib.apply_override(cfg, f"{k}={data.draw(st.one_of(_typed(keys[k]), ODD))}")
    plan.validate(cfg, plan.stage_of(cfg), devices, tuple(str(chips).split(",")))
    outcome = "accepted"
  except SynthJaxError as e:
    assert "\n" not in str(e) and str(e), (chosen, devices, chips, str(e))
    outcome = "refused"
  COUNTS.setdefault("plan", []).append(outcome)


def test_sweep_and_plan_properties_reach_both_outcomes():
  """The two tests above are not vacuous: each saw refusals and accepted requests (run after them)."""
  for stage in ("sweep", "plan"):
    outcomes = COUNTS.get(stage, [])
    if not outcomes:
      pytest.skip("run together with the property tests above")
    assert "refused" in outcomes and "accepted" in outcomes, (stage, outcomes)
