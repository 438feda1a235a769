"""Configs are plain Python: `file.py` or `file.py:arg` exposes `get_config(arg=None) -> ConfigDict`.

Overrides `--config.a.b=value` are typed from the field they replace; an unknown key or a value of
the wrong type fails before any work, naming the key and listing close matches.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import os
from typing import Any, Iterable

import ml_collections

from synth_jax.errors import ConfigError

ConfigDict = ml_collections.ConfigDict


def load_config(spec: str, overrides: Iterable[str] = ()) -> ConfigDict:
  """Loads `path.py[:arg]` and applies `a.b=value` overrides (the `--config.` prefix is optional)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist; pass --config path/to/file.py[:arg]")
  module_name = "synth_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec_obj = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec_obj)
  try:
    spec_obj.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"config file {path!r} line {e.lineno}: {e.msg}") from None
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


def apply_override(config: ConfigDict, item: str) -> None:
  """Applies one `key.path=value` override in place, typed from the existing value."""
  item = item[len("--"):] if item.startswith("--") else item
  item = item[len("config."):] if item.startswith("config.") else item
  if "=" not in item:
    raise ConfigError(f"override {item!r} has no '='; write --config.{item}=VALUE")
  key, raw = item.split("=", 1)
  parent, leaf = _walk(config, key)
  old = parent[leaf]
  parent[leaf] = parse_value(key, raw, old)


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
    raise bad("a bool (true/false)")
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


def to_dict(config: ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort()) if isinstance(config, ConfigDict) else dict(config)


def save_config(config: ConfigDict, run_dir: str) -> str:
  """Writes the fully resolved config as `run_dir/config.json` (atomically)."""
  from synth_jax import files
  path = os.path.join(run_dir, "config.json")
  files.write_json(path, to_dict(config))
  return path


def steps_from(config: ConfigDict, prefix: str, *, examples_per_epoch: int | None,
               batch_size: int, default: int | None = None) -> int:
  """Converts exactly one of `{prefix}_steps|_epochs|_examples` to a step count (big_vision style)."""
  given = {s: config.get(f"{prefix}_{s}") for s in ("steps", "epochs", "examples")}
  given = {s: v for s, v in given.items() if v is not None}
  if len(given) > 1:
    raise ConfigError(f"set only one of {', '.join(f'{prefix}_{s}' for s in given)}")
  if not given:
    if default is None:
      raise ConfigError(f"set one of {prefix}_steps, {prefix}_epochs or {prefix}_examples")
    return default
  (unit, value), = given.items()
  if unit == "steps":
    return int(value)
  examples = value if unit == "examples" else value * _need(examples_per_epoch, prefix)
  return max(1, int(round(examples / batch_size)))


def _need(n, prefix):
  if n is None:
    raise ConfigError(f"{prefix}_epochs needs the dataset size; use {prefix}_steps instead")
  return n
