"""report.html (issue 19, point 2): parses as HTML, holds every table and figure it names, refers
to nothing outside itself, and its CAS / feature distance tell a copy of real data from noise."""
import base64
import html.parser
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from synth_jax import cli, quality
from synth_jax.data import digits, writer
from synth_jax.train import sweep as sweep_lib
from tests.train import helpers


class _Collect(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.ids, self.hrefs, self.srcs, self.tags, self.rows = {}, [], [], [], {}
    self._table = None

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    self.tags.append(tag)
    if "id" in a:
      self.ids[a["id"]] = tag
    if tag == "table":
      self._table = a.get("id")
      self.rows[self._table] = 0
    if tag == "tr" and self._table:
      self.rows[self._table] += 1
    for k in ("href", "src", "data", "action", "poster"):
      if k in a:
        (self.hrefs if k == "href" else self.srcs).append(a[k])


def _noise_set(root) -> str:
  w = writer.DatasetWriter(str(root), "noise_syn", writer.image_features(digits.CLASS_NAMES))
  rng = np.random.default_rng(0)
  w.write_shard("train", 0, 1, ({"image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                                 "label": i % 10} for i in range(100)))
  return w.finalize(["train"])


def _fake_train(cfg):
  top1 = {"mix": 0.6, "vanilla": 0.5}[cfg.method] + 0.01 * cfg.shots + 0.02 * cfg.seed
  out = {"top1": top1, "top5": min(1.0, top1 + 0.2)}
  with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
    json.dump(out, f)
  return out


@pytest.mark.slow  # ~13 s of CPU (writes 3 datasets, fits the reference MLP)
def test_sweep_writes_a_self_contained_report_and_cli_rewrites_it(tmp_path, monkeypatch):
  from synth_jax import report_html
  small = report_html.get_config
  monkeypatch.setattr(report_html, "get_config", lambda arg=None: _small(small()))
  real, copy = helpers.write_data(tmp_path / "data")  # 'copy': real digits, another split seed
  noise = _noise_set(tmp_path / "data")
  c = helpers.tiny_config(tmp_path / "sweep", real, copy)
  c.sweep_title = "toy"
  root = str(tmp_path / "sweep")
  sweep_lib.sweep(c, ["method=vanilla,mix", f"synthetic={copy},{noise}", "shots=1,5", "seed=0,1"],
                  train_fn=_fake_train)
  path = os.path.join(root, "report.html")
  page = open(path, encoding="utf-8").read()
  p = _Collect()
  p.feed(page)
  p.close()
  assert p.tags[0] == "html" and "body" in p.tags
  # Every table and figure the contents list names is there; every figure is an inline PNG.
  named = [h[1:] for h in p.hrefs]
  assert p.hrefs and all(h.startswith("#") for h in p.hrefs)
  assert set(named) == {i for i, t in p.ids.items() if t in ("table", "img")}
  assert {"results-0", "plot-0-shots", "plot-0-method", "sheet-0", "sheet-1", "synthetic-quality"} <= set(named)
  assert all(s.startswith("data:image/png;base64,") for s in p.srcs) and len(p.srcs) == 4
  for s in p.srcs:
    Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).verify()
  assert "url(" not in page and "<link" not in page and "<script" not in page
  assert p.rows["results-0"] == 1 + 8  # header + method x synthetic x shots cells (seeds pooled)
  assert "52.00 ± 1.41" in page  # vanilla, shots=1: top1 0.51 and 0.53 over seeds 0, 1
  # CAS: a copy of real digits is recognised, noise is not; FD orders them the same way.
  q = _quality_rows(page)
  assert float(q[copy][0]) > 80 and float(q[noise][0]) < 30
  assert float(q[copy][1]) < float(q[noise][1])
  os.remove(path)
  assert cli.main(["report", root, "--config.quality=False"]) == 0  # no MLP: "—" in the table
  assert os.path.exists(path) and os.path.isdir(os.path.join(root, "report"))


def _small(c):
  c.max_images = 300  # keeps the test to seconds: CAS / FD on 300 images per split
  return c


def _quality_rows(page):
  start = page.index('id="synthetic-quality"')
  rows = page[start:].split("<tr>")[2:]
  out = {}
  for r in rows:
    cells = [c.split("</td>")[0] for c in r.split("<td>")[1:]]
    out[cells[1]] = (cells[3], cells[4])
  return out


def test_frechet_matches_the_closed_form_and_reference_is_deterministic():
  rng = np.random.default_rng(0)
  a = rng.normal(0, 1, (4000, 3))
  b = rng.normal(2, 1, (4000, 3))  # same covariance, mean shifted by 2 per axis: FD ~ 12
  assert abs(quality.frechet(a, b) - 12.0) < 0.3
  assert abs(quality.frechet(a, a)) < 1e-6
  d = digits.digits_arrays(size=8)
  x, y = d["train"][0][:500], d["train"][1][:500]
  r1 = quality.Reference.fit(x, y, seed=0, size=8, max_iter=60)
  r2 = quality.Reference.fit(x, y, seed=0, size=8, max_iter=60)
  np.testing.assert_array_equal(r1.features(d["test"][0]), r2.features(d["test"][0]))
  assert r1.accuracy(*d["test"]) > 0.9
