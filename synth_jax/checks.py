"""Validation before work, for every stage: rule helpers, the stage registry and the record check.

A stage registers `validate(config)` in VALIDATORS (stage name -> "module:function", beside
`cli.STAGES`): it range-checks every numeric field, every enum and path, and the cross-field rules,
raises a SynthJaxError naming the key, the value and a valid example, and writes nothing.
`runs.run_stage` calls it before it creates the run directory, then `check_record` refuses a rerun
whose settings differ from the run directory's `config.<stage>.json` (except MAY_CHANGE keys,
which do not change a stage's outputs). A new stage plugs in with one line in each table.

  checks.check(config, {"steps": Int(1, 10**6), "guidance": Float(0, 50), "dtype": OneOf(DTYPES)})
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
from typing import Any, Mapping

from synth_jax.errors import ConfigError, RunDirError

VALIDATORS = {
    "generate": "synth_jax.diffusion.generate:validate",
    "invert": "synth_jax.diffusion.invert:validate",
    "prompts": "synth_jax.prompts.stage:validate",
    "filter": "synth_jax.prompts.filter:validate",
    "data": "synth_jax.data.stage:validate",
    "train": "synth_jax.train.checks:validate",
    "demo": "synth_jax.demo:validate",
    "finetune": "synth_jax.diffusion.finetune:validate",
    "report": "synth_jax.report_html:validate",
    # sweep: its axes are not in the config; `sweep` validates every point before the first runs.
}
# Keys a rerun may change without changing the stage's outputs (everything else must match).
MAY_CHANGE = {
    "*": ("workdir",),
    "generate": ("batch_size", "mesh", "encode_threads", "attention", "fsdp"),
    "train": ("mesh", "workers"),
    "invert": ("mesh", "fsdp", "encode_batch_size"),
    "finetune": ("mesh", "compile_cache", "encode_batch_size"),
    # report: the page is rebuilt from the run dir each time; a title or sheet size may change
    "report": ("title", "sheet_per_class", "sheet_classes"),
}
# Keys a rerun may raise (never lower): the run continues from its last checkpoint to the new
# value. finetune: its learning rate is constant after warmup and every batch and EMA decay is a
# function of the step alone, so 3000 steps then a rerun to 7000 equals one 7000-step run.
MAY_GROW = {
    "finetune": ("steps", "examples", "epochs"),
}
DTYPES = ("float32", "bfloat16", "float16")
BIG = 10**9  # "huge" counts: beyond any real dataset, and small enough to never overflow


def validate(stage: str, config) -> None:
  """Runs the stage's registered validator (none registered: nothing to check)."""
  target = VALIDATORS.get(stage)
  if target is None:
    return
  module, _, fn = target.partition(":")
  getattr(importlib.import_module(module), fn)(config)


# ---- rules ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Int:
  lo: int | None = None
  hi: int | None = None
  example: Any = None
  none_ok: bool = False

  def problem(self, v):
    if v is None and self.none_ok:
      return None
    if isinstance(v, bool) or not isinstance(v, int):
      return "is not an integer"
    return _range(v, self.lo, self.hi)


@dataclasses.dataclass(frozen=True)
class Float:
  lo: float | None = None
  hi: float | None = None
  example: Any = None
  none_ok: bool = False
  lo_open: bool = False  # (lo, hi] instead of [lo, hi]

  def problem(self, v):
    if v is None and self.none_ok:
      return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      return "is not a number"
    if not math.isfinite(v):
      return "is not a finite number"
    if self.lo_open and self.lo is not None and v <= self.lo:
      return f"must be > {self.lo}"
    return _range(v, self.lo, self.hi)


@dataclasses.dataclass(frozen=True)
class Bool:
  example: Any = "true"
  none_ok: bool = False

  def problem(self, v):
    if v is None and self.none_ok:
      return None
    return None if isinstance(v, bool) else "is not a bool (true/false/yes/no/1/0)"


@dataclasses.dataclass(frozen=True)
class OneOf:
  values: tuple
  example: Any = None

  def problem(self, v):
    return None if v in self.values else f"is not one of {', '.join(map(str, self.values))}"


@dataclasses.dataclass(frozen=True)
class Text:
  nonempty: bool = False
  example: Any = None
  max_len: int = 4096

  def problem(self, v):
    if not isinstance(v, str):
      return "is not a string"
    if self.nonempty and not v.strip():
      return "is empty"
    if "\0" in v:  # no name, path or prompt holds one; os.path functions raise ValueError on it
      return "contains a NUL character"
    return f"is longer than {self.max_len} characters" if len(v) > self.max_len else None


@dataclasses.dataclass(frozen=True)
class Path:
  """A path that must exist when set ('' allowed unless `required`)."""
  kind: str = "any"  # any | file | dir
  required: bool = False
  example: Any = "PATH"

  def problem(self, v):
    if not isinstance(v, str):
      return "is not a path"
    if not v:
      return "is empty" if self.required else None
    if "\0" in v or len(v) > 4096:
      return "is not a valid path"
    p = os.path.expanduser(v)
    if self.kind == "file" and not os.path.isfile(p):
      return "is not a file" if os.path.exists(p) else "does not exist"
    if self.kind == "dir" and not os.path.isdir(p):
      return "is not a directory" if os.path.exists(p) else "does not exist"
    if self.kind == "any" and not os.path.exists(p):
      return "does not exist"
    return None


def _range(v, lo, hi):
  if lo is not None and v < lo:
    return f"must be >= {lo}"
  if hi is not None and v > hi:
    return f"must be <= {hi}"
  return None


def get(config, key: str, default=None):
  node = config
  for part in key.split("."):
    if not hasattr(node, "get"):
      return default
    node = node.get(part, default) if part in node else default
  return node


def check(config, rules: Mapping[str, Any]) -> None:
  """Applies `rules` ({dotted key: rule}); a missing key is skipped. Raises on the first problem."""
  for key, rule in rules.items():
    node, present = config, True
    for part in key.split("."):
      if not hasattr(node, "keys") or part not in node:
        present = False
        break
      node = node[part]
    if not present:
      continue
    problem = rule.problem(node)
    if problem:
      raise bad(key, node, problem, rule.example)


def bad(key: str, value, problem: str, example=None) -> ConfigError:
  """`config.KEY=VALUE <problem>; e.g. --config.KEY=EXAMPLE` as a ConfigError (one line)."""
  shown = _short(value)
  hint = f"; e.g. --config.{key}={example}" if example is not None else ""
  return ConfigError(f"config.{key}={shown} {problem}{hint}")


def _short(value, limit: int = 80) -> str:
  text = repr(value.to_dict() if hasattr(value, "to_dict") else value)
  text = text.replace("\n", " ")
  return text if len(text) <= limit else text[:limit - 3] + "..."


def inside(path: str, parent: str) -> bool:
  """True if `path` is `parent` or below it (both resolved)."""
  a, b = os.path.realpath(os.path.expanduser(path)), os.path.realpath(os.path.expanduser(parent))
  return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def not_inside_input(run_dir: str, key: str, path: str) -> None:
  """A run directory inside its own input would read its outputs as input (or delete them)."""
  if path and os.path.exists(os.path.expanduser(path)) and inside(run_dir, path):
    raise ConfigError(f"config.workdir={run_dir!r} is inside its own input config.{key}={path!r}; "
                      "pass a --config.workdir outside it")


# ---- the record: a rerun must have the recorded settings ----------------------------------------
def flat(d, prefix: str = "") -> dict:
  out = {}
  for k, v in (d.items() if isinstance(d, dict) else ()):
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(flat(v, key + "."))
    else:
      out[key] = v
  return out


def record_path(stage: str, run_dir: str) -> str:
  return os.path.join(run_dir, f"config.{stage}.json")


def _grows(old, new) -> bool:
  return isinstance(old, int) and isinstance(new, int) and new >= old


def check_record(stage: str, config_dict: dict, run_dir: str) -> None:
  """Refuses a rerun whose settings differ from the recorded `config.<stage>.json`."""
  path = record_path(stage, run_dir)
  try:
    with open(path) as f:
      old = json.load(f)
  except FileNotFoundError:
    return
  except (OSError, ValueError):
    raise RunDirError(f"{path} is unreadable; delete it if the run directory holds no outputs, or "
                      "pass a new --config.workdir") from None
  free = MAY_CHANGE["*"] + MAY_CHANGE.get(stage, ())
  new = json.loads(json.dumps(config_dict, default=str))
  a, b = flat(old), flat(new)
  grow = MAY_GROW.get(stage, ())
  keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")
          and not any(k == f or k.startswith(f + ".") for f in free)
          and not (k in grow and _grows(a.get(k), b.get(k)))]
  if keys:
    k = keys[0]
    raise RunDirError(
        f"{run_dir} holds a {stage} run with other settings {keys[:8]}"
        f"{' ...' if len(keys) > 8 else ''} ({k}: recorded {_short(a.get(k, '<unset>'), 40)}, "
        f"now {_short(b.get(k, '<unset>'), 40)}); rerun with the settings in {path}, "
        "or pass a new --config.workdir")
