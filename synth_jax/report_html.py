"""`synth-jax report RUN_DIR`: one self-contained report.html for a sweep (or a folder of sweeps).

  synth-jax report runs/study              # every sweep under runs/study -> runs/study/report.html
  synth-jax report runs/sweep_digits       # one sweep

The page needs no server and no other file: plots (matplotlib) and contact sheets are inline
`data:image/png;base64` URIs, styles are inline. Per sweep (a directory whose results.json has
"cells", as `synth-jax sweep` writes it): the results table (mean ± sample std over seeds, paper
numbers beside them when the sweep's config has them), top-1 vs volume and vs shots when those
axes exist, and top-1 per method. Per synthetic set the sweep's points used: a contact sheet, its
CAS (a classifier trained on the real training split labels the synthetic images) and the
Frechet distance between synthetic and real test images in that classifier's feature space
(synth_jax.quality). The page opens with a list of every table and figure it holds, by id.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import os

import ml_collections
import numpy as np

from synth_jax import files, quality
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)
SEED_KEYS = ("seed",)


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.run_dir = ""                 # the sweep (or folder of sweeps) to report on
  c.workdir = ""                 # '' = <run_dir>/report (lock, config record)
  c.seed = 0
  c.quality = True               # CAS + feature distance per synthetic set (trains a small MLP)
  c.max_images = 2000            # per split, for CAS / feature distance (0 = all)
  c.sheet_per_class = 8          # contact-sheet images per class
  c.sheet_classes = 10           # classes shown per contact sheet
  c.title = ""
  return c


def validate(config) -> None:
  """Every field before anything is written (checks.VALIDATORS["report"]): run_dir must be a
  directory `synth-jax sweep` wrote (or a folder of them)."""
  from synth_jax import checks
  from synth_jax.checks import BIG, Bool, Int, Path, Text
  checks.check(config, {
      "seed": Int(0, 2**32 - 1, 0), "quality": Bool(), "max_images": Int(0, BIG, 2000),
      "sheet_per_class": Int(1, 100, 8), "sheet_classes": Int(1, 1000, 10),
      "title": Text(max_len=500, example="'my study'"), "run_dir": Path("dir", True, "runs/study")})
  try:
    sweeps = find_sweeps(os.path.abspath(os.path.expanduser(config.run_dir)))
  except (OSError, ValueError) as e:
    raise checks.bad("run_dir", config.run_dir, "has an unreadable results.json "
                     f"({type(e).__name__}); rerun the sweep that wrote it", "runs/study") from None
  if not sweeps:
    raise checks.bad("run_dir", config.run_dir, "holds no sweep results (results.json with "
                     "'cells'); pass a directory `synth-jax sweep` wrote, or a folder of them",
                     "runs/study")


def report(config) -> str:
  """Writes <run_dir>/report.html; returns its path."""
  run_dir = os.path.abspath(os.path.expanduser(str(config.run_dir)))
  sweeps = find_sweeps(run_dir)
  if not sweeps:
    raise ConfigError(f"run_dir={config.run_dir!r} holds no sweep results (results.json with "
                      "'cells'); pass a directory `synth-jax sweep` wrote, or a folder of them")
  page = build(run_dir, sweeps, config)
  path = os.path.join(run_dir, "report.html")
  files.write_text(path, page)
  print(f"report: {path}", flush=True)
  return path


def find_sweeps(run_dir: str) -> list[str]:
  """run_dir itself if it is a sweep, else its sweep subdirectories (depth 1, sorted)."""
  def is_sweep(d):
    p = os.path.join(d, "results.json")
    if not os.path.isfile(p):
      return False
    with open(p) as f:
      return "cells" in json.load(f)
  if is_sweep(run_dir):
    return [run_dir]
  if not os.path.isdir(run_dir):
    return []
  return [os.path.join(run_dir, d) for d in sorted(os.listdir(run_dir)) if is_sweep(os.path.join(run_dir, d))]


class _Page:
  """Collects sections and the ids of every table and figure (for the contents list)."""

  def __init__(self):
    self.parts, self.named = [], []

  def add(self, s: str):
    self.parts.append(s)

  def table(self, tid: str, caption: str, head: list[str], rows: list[list[str]]):
    self.named.append(("table", tid, caption))
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    self.add(f'<table id="{tid}"><caption>{html.escape(caption)}</caption><tr>{cells}</tr>{body}</table>')

  def image(self, iid: str, caption: str, png: bytes):
    self.named.append(("figure", iid, caption))
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    self.add(f'<figure><img id="{iid}" alt="{html.escape(caption)}" src="{uri}">'
             f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def build(run_dir: str, sweeps: list[str], config) -> str:
  page = _Page()
  synthetic_sets: dict[str, dict] = {}
  for n, d in enumerate(sweeps):
    _sweep_section(page, n, d, synthetic_sets)
  if synthetic_sets:
    _synthetic_section(page, synthetic_sets, config)
  title = str(config.title or f"synth-jax report: {os.path.basename(run_dir)}")
  contents = "".join(f'<li><a href="#{i}">{kind} {html.escape(i)}</a>: {html.escape(c)}</li>'
                     for kind, i, c in page.named)
  style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
           "margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px}caption{font-weight:bold;"
           "text-align:left}img{max-width:100%;image-rendering:pixelated}")
  return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
          f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
          f'<nav><h2>Contents</h2><ul id="contents">{contents}</ul></nav>'
          + "".join(page.parts) + "</body></html>\n")


def _short(k: str) -> str:
  return k.rsplit(".", 1)[-1]


def _sweep_section(page: _Page, n: int, d: str, synthetic_sets: dict):
  with open(os.path.join(d, "results.json")) as f:
    res = json.load(f)
  cfg = {}
  if os.path.isfile(os.path.join(d, "config.json")):
    with open(os.path.join(d, "config.json")) as f:
      cfg = json.load(f)
  name = os.path.basename(d.rstrip("/")) or "sweep"
  page.add(f"<h2>{html.escape(cfg.get('sweep_title') or name)}</h2><p>{html.escape(d)}</p>")
  axes = [k for k, _ in res["axes"] if _short(k) not in SEED_KEYS]
  paper = cfg.get("paper_numbers") or {}
  head = [_short(k) for k in axes] + ["top-1 (%)", "top-5 (%)", "seeds"] + (["paper"] if paper else [])
  rows = []
  for c in res["cells"]:
    r = [c["point"].get(k, "") for k in axes]
    r += [f"{c['top1'][0]:.2f} ± {c['top1'][1]:.2f}", f"{c['top5'][0]:.2f} ± {c['top5'][1]:.2f}", c["n"]]
    rows.append(r + ([paper.get(c["key"], "—")] if paper else []))
  page.table(f"results-{n}", f"{name}: top-1 / top-5, mean ± sample std over seeds", head, rows)
  for x in ("volume", "shots"):
    xk = next((k for k in axes if _short(k) == x), None)
    if xk and len({c["point"][xk] for c in res["cells"]}) > 1:
      page.image(f"plot-{n}-{x}", f"{name}: top-1 vs {x}", _line_plot(res["cells"], axes, xk))
  mk = next((k for k in axes if _short(k) == "method"), None)
  if mk:
    page.image(f"plot-{n}-method", f"{name}: top-1 per method", _bar_plot(res["cells"], axes, mk))
  if res.get("failed"):
    page.add("<p>Failed points: " + html.escape(", ".join(str(f["point"]) for f in res["failed"])) + "</p>")
  for p in res.get("points", []):
    _note_synthetic(p.get("workdir", ""), synthetic_sets)


def _note_synthetic(workdir: str, synthetic_sets: dict):
  path = os.path.join(workdir, "config.json")
  if not workdir or not os.path.isfile(path):
    return
  with open(path) as f:
    c = json.load(f)
  syn = c.get("synthetic") or ""
  if syn and c.get("method") != "vanilla" and syn not in synthetic_sets:
    synthetic_sets[syn] = {k: c.get(k, "") for k in ("dataset", "train_split", "test_split",
                                                    "data_dir", "manual_dir")}


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
  _plt().close(fig)
  return buf.getvalue()


def _line_plot(cells, axes, xk) -> bytes:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 3.6))
  series: dict[str, list] = {}
  for c in cells:
    label = ", ".join(f"{_short(k)}={c['point'][k]}" for k in axes if k != xk) or "run"
    series.setdefault(label, []).append(c)
  for label, cs in series.items():
    xs = [_x(c["point"][xk]) for c in cs]
    order = np.argsort([v if isinstance(v, float) else 1e9 for v in xs], kind="stable")
    ax.errorbar([str(cs[i]["point"][xk]) for i in order], [cs[i]["top1"][0] for i in order],
                yerr=[cs[i]["top1"][1] for i in order], marker="o", capsize=3, label=label)
  ax.set_xlabel(_short(xk))
  ax.set_ylabel("top-1 (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return _png(fig)


def _x(v):
  try:
    f = float(v)
    return 1e8 if f < 0 else f  # -1 = "all": last
  except (TypeError, ValueError):
    return v


def _bar_plot(cells, axes, mk) -> bytes:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(cells) + 2), 3.6))
  labels = [", ".join(str(c["point"][k]) for k in [mk] + [a for a in axes if a != mk]) for c in cells]
  ax.bar(range(len(cells)), [c["top1"][0] for c in cells], yerr=[c["top1"][1] for c in cells],
         capsize=3, color="#4477aa")
  ax.set_xticks(range(len(cells)), labels, rotation=45, ha="right", fontsize=7)
  ax.set_ylabel("top-1 (%)")
  lo = min(c["top1"][0] - c["top1"][1] for c in cells)
  ax.set_ylim(max(0.0, lo - 5), 100)
  return _png(fig)


def _open(spec: dict, split: str):
  from synth_jax.data import registry, sources
  ds = spec["dataset"]
  if os.path.isdir(os.path.expanduser(ds)):
    return sources.open_split(ds, split)
  entry = registry.get(ds)
  return registry.load(entry.name, split, data_dir=spec.get("data_dir") or "~/tensorflow_datasets",
                       manual_dir=os.path.expanduser(spec.get("manual_dir") or "") or None)


def _splits(spec: dict) -> tuple[str, str]:
  from synth_jax.data import registry
  if os.path.isdir(os.path.expanduser(spec["dataset"])):
    default = ("train", "test")
  else:
    e = registry.get(spec["dataset"])
    default = (e.train_split, e.eval_split)
  return spec.get("train_split") or default[0], spec.get("test_split") or default[1]


def contact_sheet(images, labels, per_class: int, classes: int) -> bytes:
  """A grid: one row per class (the first `classes`), its first `per_class` images (48 px tiles,
  blank where a class has fewer)."""
  from PIL import Image
  from synth_jax.diffusion import generate_finish
  side = 48
  tiles = []
  for c in sorted(set(labels.tolist()))[:classes]:
    row = [Image.fromarray(im[..., :3]).resize((side, side), Image.NEAREST)
           for im in images[labels == c][:per_class]]
    tiles += row + [Image.new("RGB", (side, side), (255, 255, 255))] * (per_class - len(row))
  return generate_finish.contact_sheet(tiles, cols=per_class)


def _synthetic_section(page: _Page, synthetic_sets: dict, config):
  from synth_jax.data import sources
  page.add("<h2>Synthetic sets</h2><p>CAS: share of synthetic images that a classifier trained on "
           "the real training split labels as their class. FD: Frechet distance between synthetic "
           "and real test images in that classifier's hidden features (lower = closer). "
           "Reference: an MLP on 16 px images (synth_jax.quality).</p>")
  refs: dict[tuple, tuple] = {}
  rows = []
  for n, (syn, spec) in enumerate(sorted(synthetic_sets.items())):
    split = sources.open_split(syn, "train")
    images, labels = quality.read_split(split, config.max_images, config.seed)
    page.image(f"sheet-{n}", f"contact sheet of {syn}",
               contact_sheet(images, labels, config.sheet_per_class, config.sheet_classes))
    row = [f"sheet-{n}", syn, len(split)]
    if config.quality and spec.get("dataset"):
      key = tuple(sorted(spec.items()))
      if key not in refs:
        tr, te = _splits(spec)
        real_train, real_test = _open(spec, tr), _open(spec, te)
        xi, xl = quality.read_split(real_train, config.max_images, config.seed)
        ti, tl = quality.read_split(real_test, config.max_images, config.seed)
        ref = quality.Reference.fit(xi, xl, seed=config.seed)
        refs[key] = (ref, ti, ref.features(ti), ref.accuracy(ti, tl), real_train.class_names)
      ref, ti, test_feats, test_acc, names = refs[key]
      mapping = sources.label_map(split.class_names, names, what=f"synthetic dataset {syn!r}")
      cas = ref.accuracy(images, mapping[labels])
      fd = quality.frechet(ref.features(images), test_feats)
      row += [f"{100 * cas:.1f}", f"{fd:.2f}", f"{100 * test_acc:.1f}"]
    else:
      row += ["—", "—", "—"]
    rows.append(row)
  page.table("synthetic-quality", "synthetic sets: CAS and feature distance to the real test split",
             ["sheet", "synthetic set", "images", "CAS (%)", "FD to real test", "reference acc. on real test (%)"],
             rows)
