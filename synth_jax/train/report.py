"""Sweep report: results.json (all points), results.md (mean ± std per cell) and accuracy.png.

A cell is every axis but the seed; its numbers are mean ± sample std (ddof=1) of top-1/top-5 in %
over the seeds that finished. `paper` maps a cell key ("method=vanilla,dataset=aircraft", the
non-seed axes in sweep order) to the paper's number, printed beside ours.
"""
from __future__ import annotations

import io
import json
import math
import os
from typing import Sequence

import numpy as np

from synth_jax import files

SEED_KEYS = ("seed",)


def _short(key: str) -> str:
  return key.rsplit(".", 1)[-1]


def collect(grid) -> list[dict]:
  """One row per finished point: its axis values plus top1/top5 from its results.json."""
  rows = []
  for point, cfg in grid:
    path = os.path.join(cfg.workdir, "results.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      res = json.load(f)
    rows.append({"point": dict(point), "top1": float(res["top1"]), "top5": float(res["top5"]),
                 "workdir": cfg.workdir})
  return rows


def cell_key(point: dict, axes) -> str:
  return ",".join(f"{k}={point[k]}" for k, _ in axes if _short(k) not in SEED_KEYS)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  a = np.asarray(values, np.float64) * 100
  return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def cells(axes, rows) -> list[dict]:
  """Rows grouped by cell, in grid order: {key, point, n, top1 (mean, std), top5 (mean, std)}."""
  grouped: dict[str, list[dict]] = {}
  for r in rows:
    grouped.setdefault(cell_key(r["point"], axes), []).append(r)
  out = []
  for key, rs in grouped.items():
    point = {k: v for k, v in rs[0]["point"].items() if _short(k) not in SEED_KEYS}
    out.append({"key": key, "point": point, "n": len(rs), "top1": _mean_std([r["top1"] for r in rs]),
                "top5": _mean_std([r["top5"] for r in rs])})
  return out


def markdown(axes, table, failed, paper: dict, title: str = "") -> str:
  cols = [k for k, _ in axes if _short(k) not in SEED_KEYS]
  head = cols + ["top-1 (%)", "top-5 (%)", "seeds"] + (["paper top-1 (%)"] if paper else [])
  lines = [f"# {title or 'Sweep results'}", "",
           "mean ± sample std over seeds" + ("; paper numbers from the config's paper_numbers (its "
                                             "docstring names their sources)" if paper else ""), "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for c in table:
    row = [str(c["point"][k]) for k in cols]
    row += [f"{c['top1'][0]:.2f} ± {c['top1'][1]:.2f}", f"{c['top5'][0]:.2f} ± {c['top5'][1]:.2f}", str(c["n"])]
    if paper:
      row.append(str(paper.get(c["key"], "—")))
    lines.append("| " + " | ".join(row) + " |")
  if failed:
    lines += ["", "## Failed points (rerun the sweep to retry)", ""]
    lines += [f"- {','.join(f'{k}={v}' for k, v in f['point'].items())}: {f['error']}" for f in failed]
  return "\n".join(lines) + "\n"


def plot(axes, table) -> bytes | None:
  """Accuracy vs the volume axis (else the first non-method axis), one line per method."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = [k for k, _ in axes if _short(k) not in SEED_KEYS]
  if not keys:
    return None
  method = next((k for k in keys if "method" in _short(k)), None)
  xkey = next((k for k in keys if "volume" in _short(k)), None) or next((k for k in keys if k != method), None)
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  series: dict[str, list] = {}
  for c in table:
    label = ", ".join(f"{_short(k)}={c['point'][k]}" for k in keys if k != xkey) or "run"
    series.setdefault(label, []).append(c)
  for label, cs in series.items():
    xs = [c["point"][xkey] if xkey else "" for c in cs]
    numeric = all(_is_number(x) for x in xs)
    order = sorted(range(len(cs)), key=lambda i: float(xs[i]) if numeric else i)
    x = [float(xs[i]) if numeric else str(xs[i]) for i in order]
    y = [cs[i]["top1"][0] for i in order]
    e = [cs[i]["top1"][1] for i in order]
    ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
  ax.set_xlabel(_short(xkey) if xkey else "")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  plt.close(fig)
  return buf.getvalue()


def _is_number(x) -> bool:
  try:
    return math.isfinite(float(x))
  except (TypeError, ValueError):
    return False


def write(root: str, axes, rows, failed, paper: dict | None = None, title: str = "") -> dict:
  table = cells(axes, rows)
  files.write_json(os.path.join(root, "results.json"), {"axes": [[k, v] for k, v in axes], "points": rows,
                                                     "cells": table, "failed": failed})
  files.write_text(os.path.join(root, "results.md"), markdown(axes, table, failed, paper or {}, title))
  png = plot(axes, table) if table else None
  if png:
    files.write_bytes(os.path.join(root, "accuracy.png"), png)
  return {"cells": table}
