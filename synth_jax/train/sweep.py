"""`synth-jax sweep`: a grid of train runs, one work directory per point, then a report.

  synth-jax sweep --config configs/train/base.py:smoke --config.workdir=runs/grid \
      --sweep "method=vanilla,mix,bridged++" --sweep "data.volume=10,50" --sweep "seed=0,1,2"
  synth-jax sweep --config configs/paper/li_table_main.py --config.workdir=runs/t1 --print-only

Axes are `key=v1,v2,...` (dotted keys allowed, values typed like `--config.KEY=VALUE`); without
--sweep the config's own `sweep_axes` (a tuple of such strings, set by configs/paper/*) are used.
A string field may name an axis in braces (`synthetic="runs/syn/{dataset}"`): it is filled
per point; `sweep_tied` lists settings that follow an axis value (each model its checkpoint). Points run sequentially under `<workdir>/points/<key=value,...>/`; a point whose results.json
exists is skipped, so a rerun after a crash or preemption continues where it stopped. With
--print-only each point's config is written as JSON and one launch line per point is printed
(for a pod: run the lines anywhere, then rerun the sweep to collect). At the end the sweep writes
`<workdir>/results.json` (every point), `results.md` (mean ± std over seeds per cell, paper numbers
beside them when the config has `paper_numbers`), `accuracy.png` and report.html (synth_jax.report_html).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import re
import shlex
from typing import Callable, Sequence

from synth_jax import config as config_lib
from synth_jax import files, runs
from synth_jax.errors import ConfigError, SynthJaxError, TrainingError

log = logging.getLogger(__name__)
# Absolute when the package runs from a checkout (editable install), so launch lines work from any cwd.
_REPO_FROM_JSON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "configs", "train", "from_json.py")
FROM_JSON = _REPO_FROM_JSON if os.path.exists(_REPO_FROM_JSON) else os.path.join("configs", "train", "from_json.py")


def parse_axes(sweeps: Sequence[str]) -> list[tuple[str, list[str]]]:
  """["method=a,b", "seed=0,1"] -> [("method", ["a", "b"]), ("seed", ["0", "1"])].

  Values holding commas or colons are quoted (`model="resnet:basic:1,1,1,1",resnet18`) or given
  as a JSON list (`model=["resnet:basic:1,1,1,1", "resnet18"]`); a repeated value is refused (it
  would run one point twice under one name).
  """
  axes, seen = [], set()
  for item in sweeps:
    key, eq, values = str(item).partition("=")
    key = key.strip().removeprefix("--").removeprefix("config.")
    vals = _values(item, values)
    if not eq or not key or not vals:
      raise ConfigError(f"sweep axis {item!r} is not KEY=V1,V2,...; e.g. --sweep \"seed=0,1,2\"")
    if key in seen:
      raise ConfigError(f"sweep axis {key!r} is given twice; merge its values into one --sweep")
    dup = next((v for v in vals if vals.count(v) > 1), None)
    if dup is not None:
      raise ConfigError(f"sweep axis {key!r} lists the value {dup!r} twice; give each value once")
    seen.add(key)
    axes.append((key, vals))
  return axes


def _values(item: str, text: str) -> list[str]:
  text = text.strip()
  if text.startswith("["):
    try:
      vals = json.loads(text)
    except ValueError:
      raise ConfigError(f"sweep axis {item!r}: the value list is not valid JSON; e.g. "
                        "--sweep 'model=[\"resnet:basic:1,1,1,1\", \"resnet18\"]'") from None
    if not isinstance(vals, list) or not all(isinstance(v, (str, int, float, bool)) for v in vals):
      raise ConfigError(f"sweep axis {item!r}: a JSON value list holds strings or numbers only")
    return [json.dumps(v) if isinstance(v, bool) else str(v) for v in vals]
  import csv
  try:
    rows = list(csv.reader([text], skipinitialspace=True, strict=True))
  except csv.Error as e:
    raise ConfigError(f"sweep axis {item!r}: {e}; quote values holding commas, e.g. "
                      "model=\"resnet:basic:1,1,1,1\",resnet18") from None
  return [v.strip() for v in (rows[0] if rows else []) if v.strip()]


def point_name(point: Sequence[tuple[str, str]]) -> str:
  """A directory name for a point: 'method=mix,seed=1'; unique per point.

  When characters had to be replaced (or the name is too long for a file name), a short hash of
  the exact values is added, so 'a/b' and 'a_b' never share a directory.
  """
  raw = ",".join(f"{k}={v}" for k, v in point)
  name = re.sub(r"[^A-Za-z0-9=,.+_-]", "_", raw)
  if name != raw or len(name) > 120 or name.startswith("."):
    name = name[:120] + "-" + hashlib.sha256(raw.encode()).hexdigest()[:10]
  return name


def points(config, axes) -> list[tuple[tuple[tuple[str, str], ...], config_lib.ConfigDict]]:
  """Every grid point with its config (overrides applied, workdir set); bad keys fail up front."""
  root = runs.workdir(config)
  out = []
  for values in itertools.product(*[v for _, v in axes]):
    point = tuple(zip([k for k, _ in axes], values))
    cfg = copy.deepcopy(config)
    for k, v in point:
      config_lib.apply_override(cfg, f"{k}={v}")
    apply_tied(cfg, dict(point))
    _fill_templates(cfg, {k.rsplit(".", 1)[-1]: v for k, v in point})
    cfg.workdir = os.path.join(root, "points", point_name(point))
    out.append((point, cfg))
  names = [point_name(p) for p, _ in out]
  if len(set(names)) != len(names):  # only a hash collision could do this
    raise ConfigError(f"two sweep points share the directory name {names[0]!r}; rename a value")
  return out


def check_points(grid, full: bool = True) -> None:
  """Every point's config is validated before the first point runs (or is printed)."""
  from synth_jax.train import checks
  for point, cfg in grid:
    try:
      (checks.validate if full else checks.values)(cfg)
    except SynthJaxError as e:
      raise type(e)(f"sweep point {point_name(point)}: {e}") from None


def apply_tied(cfg, values: dict) -> None:
  """Settings that follow an axis value: `sweep_tied = {"model": {"vit_b16": {"init": ...,
  "init_format": "timm"}}}` sets init and init_format wherever model=vit_b16 (a checkpoint per
  architecture). A value the table does not list keeps the config's own settings."""
  tied = cfg.get("sweep_tied", None) or {}
  for key, value in values.items():
    table = tied.get(key.rsplit(".", 1)[-1], None) or {}
    for k, v in dict(table.get(str(value), None) or {}).items():
      config_lib.apply_override(cfg, f"{k}={v}")


def _fill_templates(cfg, values: dict) -> None:
  """String fields naming an axis in braces follow the point: synthetic="syn/{dataset}" gives
  each dataset its own synthetic set (axes that must move together, e.g. dataset and its data)."""
  for key in list(cfg.keys()):
    v = cfg[key]
    if isinstance(v, config_lib.ConfigDict):
      _fill_templates(v, values)
    elif isinstance(v, str) and "{" in v:
      for name, val in values.items():
        v = v.replace("{" + name + "}", str(val))
      cfg[key] = v


def launch_line(cfg) -> str:
  """Writes the point's config as JSON; the line trains exactly that config."""
  path = os.path.join(cfg.workdir, "sweep_point.json")
  files.write_json(path, config_lib.to_dict(cfg))
  return f"synth-jax train --config {shlex.quote(FROM_JSON + ':' + path)}"


def load_json_config(path: str) -> config_lib.ConfigDict:
  """The inverse of launch_line's JSON (used by configs/train/from_json.py)."""
  if not os.path.isfile(path):
    raise ConfigError(f"sweep point config {path!r} does not exist; rerun the sweep with --print-only")
  with open(path) as f:
    return config_lib.ConfigDict(json.load(f))


def _default_train(cfg):
  from synth_jax.train.stage import train
  return train(cfg)


def _html_report(root: str, config) -> None:
  """report.html beside results.md; a failure is logged (results.md stands) with the rerun line."""
  from synth_jax import report_html
  c = report_html.get_config()
  c.run_dir, c.seed = root, int(config.get("seed", 0) or 0)
  c.title = str(config.get("sweep_title", "") or "")
  try:
    report_html.report(c)
  except (SynthJaxError, OSError, ValueError) as e:
    log.error("report.html not written (%s); rerun: synth-jax report %s", e, root)


def sweep(config, sweeps: Sequence[str] = (), print_only: bool = False,
          train_fn: Callable | None = None) -> dict:
  """Runs (or prints) the grid, then writes the report; returns {"points": [...], "failed": [...]}."""
  from synth_jax.train import report
  axes = parse_axes(list(sweeps) or list(config.get("sweep_axes", None) or ()))
  if not axes:
    raise ConfigError("no sweep axes: pass --sweep KEY=V1,V2 (or use a config with sweep_axes)")
  grid = points(config, axes)
  check_points(grid, full=not print_only)
  root = runs.workdir(config)
  log.info("sweep: %d points under %s", len(grid), root)
  if print_only:
    from synth_jax.train import stage  # every point resolves before any line is printed
    for point, cfg in grid:
      try:
        stage.resolve(cfg)
      except SynthJaxError as e:
        raise type(e)(f"sweep point {point_name(point)}: {e}") from None
    for _, cfg in grid:
      print(launch_line(cfg), flush=True)
    return {"points": [], "failed": []}
  train_fn = train_fn or _default_train
  failed = []
  for i, (point, cfg) in enumerate(grid):
    done = os.path.join(cfg.workdir, "results.json")
    if os.path.exists(done):
      log.info("[%d/%d] %s: finished, skipped", i + 1, len(grid), point_name(point))
      continue
    log.info("[%d/%d] %s", i + 1, len(grid), point_name(point))
    try:
      runs.run_stage("train", train_fn, cfg)
    except runs.Preempted:
      raise
    except SynthJaxError as e:  # one bad point (e.g. NaN loss) must not lose the rest of the grid
      log.error("point %s failed: %s", point_name(point), e)
      failed.append({"point": dict(point), "error": str(e)})
  rows = report.collect(grid)
  report.write(root, axes, rows, failed, paper=dict(config.get("paper_numbers", None) or {}),
               title=str(config.get("sweep_title", "") or ""))
  _html_report(root, config)
  if failed:
    raise TrainingError(f"{len(failed)} of {len(grid)} sweep points failed (first: "
                        f"{point_name(tuple(failed[0]['point'].items()))}: {failed[0]['error']}); "
                        f"see {os.path.join(root, 'results.md')}, fix and rerun to retry them")
  return {"points": rows, "failed": failed}
