"""Configs are plain Python: `file.py` or `file.py:arg` exposes `get_config(arg=None) -> ConfigDict`.

Overrides `--config.a.b=value` are typed from the field they replace; an unknown key or a value of
the wrong type fails before any work, naming the key and listing close matches.
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import inspect
import json
import os
import re
import types
from typing import Any, Iterable

import ml_collections

from synth_jax.errors import ConfigError

ConfigDict = ml_collections.ConfigDict


def load_config(spec: str, overrides: Iterable[str] = ()) -> ConfigDict:
  """Loads `path.py[:arg]` and applies `a.b=value` overrides (the `--config.` prefix is optional)."""
  path, _, arg = spec.partition(":")
  if os.path.isdir(path):
    raise ConfigError(f"--config {path!r} is a directory; pass a config file in it, e.g. "
                      f"{os.path.join(path, 'base.py')}")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist; pass --config path/to/file.py[:arg]")
  module = import_file(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} defines no get_config(arg=None)")
  takes_arg = bool(inspect.signature(module.get_config).parameters)
  if arg and not takes_arg:
    raise ConfigError(f"config file {path!r}: get_config() takes no argument but {arg!r} was given")
  config = module.get_config(arg or None) if takes_arg else module.get_config()
  if not isinstance(config, ConfigDict):
    config = ConfigDict(config)
  for item in overrides:
    apply_override(config, item)
  return config


def import_file(path: str, relative_to: str | None = None) -> types.ModuleType:
  """Imports a Python file by path, without touching sys.path (config files and their helpers).

  `relative_to` (a file, usually `__file__`) resolves `path` against that file's folder, so
  `configs/paper/x.py` reads its sibling with `import_file("common.py", __file__)`. Each file
  becomes its own module, named after its absolute path: two `common.py` never collide.
  """
  if relative_to is not None:
    path = os.path.join(os.path.dirname(os.path.abspath(relative_to)), path)
  path = os.path.abspath(path)
  name = "synth_jax_config_" + hashlib.sha1(path.encode()).hexdigest()[:12] + "_" + re.sub(
      r"\W", "_", os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None:
    raise ConfigError(f"config file {path!r} is not a Python file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"config file {path!r} line {e.lineno}: {e.msg}") from None
  except FileNotFoundError:
    raise ConfigError(f"config file {path!r} does not exist") from None
  return module


def apply_override(config: ConfigDict, item: str) -> None:
  """Applies one `key.path=value` override in place, typed from the existing value."""
  item = item[len("--"):] if item.startswith("--") else item
  item = item[len("config."):] if item.startswith("config.") else item
  if "=" not in item:
    raise ConfigError(f"override {item!r} has no '='; write --config.{item}=VALUE")
  key, raw = item.split("=", 1)
  parent, leaf = _walk(config, key)
  old = parent[leaf]
  if old is None and isinstance(parent, ConfigDict):  # a typed placeholder (FieldReference)
    kind = parent.get_type(leaf)
    if kind in (bool, int, float, str) and raw.strip().lower() not in ("none", "null", ""):
      old = kind()
    elif raw.strip().lower() in ("none", "null"):
      parent[leaf] = None
      return
  try:
    parent[leaf] = parse_value(key, raw, old)
  except (TypeError, ValueError) as e:  # ConfigDict's own type check: one line, not a traceback
    raise ConfigError(f"config key {key!r} cannot take {raw!r} ({e})") from None


def _walk(config: ConfigDict, key: str) -> tuple[Any, str]:
  node, parts = config, key.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, (ConfigDict, dict)) or part not in node:
      prefix = ".".join(parts[:depth])
      options = list(node.keys()) if isinstance(node, (ConfigDict, dict)) else []
      close = difflib.get_close_matches(part, options, n=3, cutoff=0.5)
      full = lambda k: f"{prefix}.{k}" if prefix else k  # noqa: E731
      hint = f"; did you mean {', '.join(full(c) for c in close)}?" if close else (
          f"; known keys here: {', '.join(sorted(map(full, options)))}" if options else "")
      raise ConfigError(f"unknown config key {key!r}{hint}")
    if depth < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


def parse_value(key: str, raw: str, old: Any) -> Any:
  """Parses `raw` to the type of `old`; raises ConfigError naming key, value and expected type."""
  def bad(expected: str) -> ConfigError:
    return ConfigError(f"config key {key!r} expects {expected}, got {raw!r}")

  if isinstance(old, bool):
    low = raw.strip().lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise bad("a bool (true/false/yes/no/1/0)")
  if isinstance(old, int):
    try:
      return int(raw)
    except ValueError:
      raise bad("an int") from None
  if isinstance(old, float):
    try:
      return float(raw)
    except ValueError:
      raise bad("a float") from None
  if isinstance(old, str):
    return raw
  if isinstance(old, (tuple, list)):
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not isinstance(value, (tuple, list)):
      value = (value,)
    return type(old)(value)
  if isinstance(old, (ConfigDict, dict)):
    raise bad("a group of keys: set its fields one by one (e.g. " + key + ".FIELD=...)")
  if old is None:  # untyped placeholder: take a Python literal, else the string
    try:
      return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      return raw
  try:
    return type(old)(raw)
  except Exception:
    raise bad(type(old).__name__) from None


def parse_arg(arg: str | None, **spec: Any) -> ConfigDict:
  """big_vision-style `get_config` arg parsing: 'a=1,b=x,smoke' typed by the defaults in `spec`.

  A bare word sets a bool default to True. Unknown names fail with close matches.
  """
  result = ConfigDict(dict(spec))
  if not arg:
    return result
  for part in arg.split(","):
    part = part.strip()
    if not part:
      continue
    name, eq, raw = part.partition("=")
    if name not in spec:
      close = difflib.get_close_matches(name, list(spec), n=3, cutoff=0.5)
      hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(spec)}"
      raise ConfigError(f"unknown config arg {name!r}{hint}")
    if not eq:
      if not isinstance(spec[name], bool):
        raise ConfigError(f"config arg {name!r} needs a value: {name}=VALUE")
      result[name] = True
    else:
      result[name] = parse_value(name, raw, spec[name])
  return result


def refuse_preset_override(arg: str | None, preset: str, keys: Iterable[str]) -> None:
  """A preset arg (e.g. `smoke`) that sets `keys` must not silently replace the same keys given
  explicitly in `arg`: 'smoke,batch_size=128' is refused in one line, not run at 64."""
  given = {p.strip().partition("=")[0] for p in (arg or "").split(",") if "=" in p}
  clash = sorted(given & set(keys))
  if clash:
    raise ConfigError(f"config arg {preset!r} sets {', '.join(clash)} itself, which the arg also "
                      f"gives; drop one, or keep {preset!r} and override with --config.KEY=VALUE")


def to_dict(config: ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort()) if isinstance(config, ConfigDict) else dict(config)


def save_config(config: ConfigDict, run_dir: str, **extra) -> str:
  """Writes the fully resolved config (plus `extra` entries, e.g. runtime) as
  `run_dir/config.json` (atomically)."""
  from synth_jax import files
  path = os.path.join(run_dir, "config.json")
  files.write_json(path, {**to_dict(config), **extra})
  return path


DURATION_UNITS = ("steps", "examples", "epochs")  # in precedence order


def _duration(config: ConfigDict, prefix: str):
  """(key of each unit, the first (unit, value) set > 0 or None): the rule both helpers share."""
  keys = {u: f"{prefix}_{u}" if prefix else u for u in DURATION_UNITS}
  for unit in DURATION_UNITS:
    value = config.get(keys[unit])
    if value is not None and value > 0:
      return keys, (unit, value)
  return keys, None


def steps_from(config: ConfigDict, prefix: str = "", *, examples_per_epoch: int | None,
               batch_size: int, what: str | None = None) -> int:
  """A duration in any unit -> steps (big_vision's `utils.steps`), the one rule every stage uses.

  The keys are `steps`, `examples`, `epochs` (or `{prefix}_steps`, ...). The first of them that is
  set and > 0 wins, in that order, so `--config.phase2.steps=500` overrides a config's default
  epochs without unsetting them. Examples and epochs round to the nearest step (at least 1).
  """
  key, found = _duration(config, prefix)
  if found is None:
    what = what or f"{key['steps']}, {key['examples']} or {key['epochs']}"
    raise ConfigError(f"no length is set for {what}; set one of them > 0")
  unit, value = found
  if unit == "steps":
    return int(value)
  if unit == "epochs" and examples_per_epoch is None:
    raise ConfigError(f"{key['epochs']} needs the dataset size; use {key['steps']} instead")
  examples = value if unit == "examples" else value * examples_per_epoch
  return max(1, int(round(examples / batch_size)))


def check_duration(config: ConfigDict, prefix: str = "", example: str = "steps=1000") -> None:
  """Before any data is read: `steps_from` will find a length (one of steps/examples/epochs > 0)."""
  key, found = _duration(config, prefix)
  if found is None:
    raise ConfigError(f"no length is set: {key['steps']}, {key['examples']} and {key['epochs']} "
                      f"are all 0; pass e.g. --config.{example}")


DTYPES = ("float32", "bfloat16", "float16")


def dtype_from(config: ConfigDict, key: str = "dtype", allowed: Iterable[str] = DTYPES):
  """config[key] (a dtype name, the one spelling every stage uses) -> the jnp dtype; a name not in
  `allowed` is a ConfigError naming the key and the choices."""
  import jax.numpy as jnp
  name = config[key]
  if name not in tuple(allowed):
    raise ConfigError(f"{key}={name!r} is not one of {', '.join(allowed)}; pass e.g. "
                      f"--config.{key}=bfloat16")
  return jnp.dtype(name)
