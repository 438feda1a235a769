"""`synth-jax filter` on a tiny synthetic dataset with a tiny random HF CLIP; decisions vs torch."""
import json
import os

import numpy as np
import pytest

from synth_jax import runs
from synth_jax.data import sources
from synth_jax.data import writer as writer_lib
from synth_jax.prompts import filter as filter_lib
from tests.clip import helpers

CLASSES = ["golden_retriever", "tabby cat", "airliner"]
PER_CLASS = 7
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("filter")
  clip_dir = str(root / "clip")
  model = helpers.hf_clip_folder(clip_dir, seed=1)
  feats = writer_lib.image_features(CLASSES, extras={"class_name": "text", "prompt": "text",
                                                     "seed": "int64"})
  w = writer_lib.DatasetWriter(str(root / "gen"), "tiny_syn", feats)
  rng = np.random.default_rng(0)
  examples = [{"image": rng.integers(0, 256, (36, 40, 3), dtype=np.uint8), "label": i % 3,
               "class_name": CLASSES[i % 3], "prompt": f"a photo of a {CLASSES[i % 3]}, #{i}",
               "seed": i} for i in range(3 * PER_CLASS)]
  w.write_shard("train", 0, 2, examples[:10])
  w.write_shard("train", 1, 2, examples[10:])
  return clip_dir, model, w.finalize(["train"])


def _config(setup, workdir, **kw):
  from synth_jax.config import load_config
  clip_dir, _, data = setup
  c = load_config("configs/filter/base.py", [f"synthetic={data}", f"clip={clip_dir}",
                                             f"workdir={workdir}"])
  c.templates = TEMPLATES
  c.chunk_size = 8
  c.shard_size = 5
  c.batch_size = 8
  c.update(kw)
  return c


def _torch_scores(model, clip_dir, split, templates=TEMPLATES):
  """Scores and zero-shot predictions from transformers' CLIPModel, independently of our code."""
  import io

  import torch
  from PIL import Image
  from transformers import CLIPImageProcessorPil, CLIPTokenizer
  tok = CLIPTokenizer.from_pretrained(clip_dir)
  texts = [t.format(c.replace("_", " ")) for c in CLASSES for t in templates]
  ids = tok(texts, padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
  images = [np.asarray(Image.open(io.BytesIO(split.source[i]["image"])).convert("RGB"))
            for i in range(len(split))]
  pix = CLIPImageProcessorPil.from_pretrained(clip_dir)(images, return_tensors="pt")["pixel_values"]
  with torch.no_grad():
    t = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    v = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
  t = torch.nn.functional.normalize(t, dim=-1).reshape(len(CLASSES), len(templates), -1).mean(1)
  sims = (torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T).numpy()
  labels = split.labels()
  return sims[np.arange(len(labels)), labels], sims.argmax(-1), labels


def test_decide_fraction_misclassified_and_min_keep():
  labels = np.array([0, 0, 0, 0, 1, 1, 2])
  scores = np.array([0.4, 0.1, 0.3, 0.2, 0.5, 0.6, 0.1])
  preds = np.array([0, 0, 1, 0, 1, 0, 0])
  keep = filter_lib.decide(labels, scores, preds, 3, drop_fraction=0.5)
  np.testing.assert_array_equal(keep, [1, 0, 1, 0, 0, 1, 1])  # floor(n/2) lowest: 2, 1 and 0
  keep = filter_lib.decide(labels, scores, preds, 3, drop_misclassified=True)
  np.testing.assert_array_equal(keep, [1, 1, 0, 1, 1, 0, 1])  # class 2's only image comes back
  keep = filter_lib.decide(labels, scores, preds, 3, drop_misclassified=True, min_keep_per_class=0)
  assert not keep[6]
  keep = filter_lib.decide(labels, scores, preds, 3, 0.5, True, min_keep_per_class=2)
  np.testing.assert_array_equal(keep, [1, 0, 1, 0, 1, 1, 1])  # best-scoring dropped come back


def test_filter_stage_matches_torch_decisions_and_writes_dataset(setup, tmp_path):
  clip_dir, model, data = setup
  config = _config(setup, str(tmp_path / "run"), drop_fraction=0.3, drop_misclassified=True)
  report = runs.run_stage("filter", filter_lib.filter_dataset, config)
  src = sources.open_split(data, "train")
  scores, preds, labels = _torch_scores(model, clip_dir, src)
  expect = filter_lib.decide(labels, scores, preds, 3, 0.3, True, 1)
  assert 0 < expect.sum() < len(expect)
  assert report["kept"] == int(expect.sum()) and report["total"] == 3 * PER_CLASS
  for c in report["classes"]:
    dropped = {d["index"]: d["score"] for d in c["dropped"]}
    want = [i for i in np.flatnonzero(labels == c["id"]) if not expect[i]]
    assert sorted(dropped) == want, c["name"]
    for i, s in dropped.items():
      assert abs(s - scores[i]) < 1e-4
  assert report["classes"][0]["prompt_name"] == "golden retriever"
  with open(os.path.join(config.workdir, "filter_report.json")) as f:
    assert json.load(f) == report
  out = sources.open_split(report["output"], "train")
  assert out.class_names == CLASSES and len(out) == report["kept"]
  kept = np.flatnonzero(expect)
  for j, i in enumerate(kept):  # same record bytes, input order
    a, b = out.source[j], src.source[int(i)]
    assert a["image"] == b["image"] and a["prompt"] == b["prompt"] and a["seed"] == b["seed"]
  mtime = os.path.getmtime(os.path.join(config.workdir, "filter_report.json"))
  assert runs.run_stage("filter", filter_lib.filter_dataset, config) == report  # rerun: no-op
  assert os.path.getmtime(os.path.join(config.workdir, "filter_report.json")) == mtime


def test_filter_cli_writes_dataset_and_report_and_refuses_bad_values(setup, tmp_path, capfd):
  """`synth-jax filter` through cli.main with the config file's own templates: exit 0, report and
  filtered dataset as transformers' CLIPModel decides; drop_fraction=1.5 is exit 2, one line."""
  import tensorflow_datasets as tfds
  from synth_jax import cli
  clip_dir, model, data = setup
  workdir = tmp_path / "run"
  argv = ["filter", "--config",
          f"configs/filter/base.py:synthetic={data},clip={clip_dir},drop_fraction=0.3",
          "--config.chunk_size=8", "--config.batch_size=8", "--config.shard_size=5"]
  assert cli.main(argv + [f"--config.workdir={workdir}"]) == 0
  report = json.loads((workdir / "filter_report.json").read_text())
  src = sources.open_split(data, "train")
  scores, preds, labels = _torch_scores(model, clip_dir, src, templates=["a photo of a {}."])
  expect = filter_lib.decide(labels, scores, preds, 3, 0.3, True, 1)
  assert 0 < expect.sum() < len(expect)
  assert report["total"] == 3 * PER_CLASS and report["kept"] == int(expect.sum())
  assert [c["name"] for c in report["classes"]] == CLASSES
  worst = 0.0
  for c in report["classes"]:
    dropped = {d["index"]: d["score"] for d in c["dropped"]}
    assert sorted(dropped) == [i for i in np.flatnonzero(labels == c["id"]) if not expect[i]]
    worst = max([worst] + [abs(s - scores[i]) for i, s in dropped.items()])
  assert worst < 1e-4, worst
  assert os.path.realpath(report["output"]).startswith(os.path.realpath(workdir))
  info = tfds.builder_from_directory(report["output"]).info
  assert info.features["label"].names == CLASSES
  assert info.splits["train"].num_examples == report["kept"]
  out = sources.open_split(report["output"], "train")
  assert [out.source[j]["seed"] for j in range(len(out))] == list(np.flatnonzero(expect))
  capfd.readouterr()
  bad = tmp_path / "bad"
  assert cli.main(argv + [f"--config.workdir={bad}", "--config.drop_fraction=1.5"]) == 2
  lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1 and "drop_fraction=1.5" in lines[0] and "[0, 1)" in lines[0], lines
  assert not (bad / "filter_report.json").exists()
  print(f"filter CLI dropped-image scores vs transformers: max-abs {worst:.1e}")


def test_filter_preempted_then_resumed_equals_uninterrupted(setup, tmp_path, monkeypatch):
  whole = runs.run_stage("filter", filter_lib.filter_dataset,
                         _config(setup, str(tmp_path / "a"), drop_fraction=0.4, drop_misclassified=False))
  config = _config(setup, str(tmp_path / "b"), drop_fraction=0.4, drop_misclassified=False)
  monkeypatch.setattr(filter_lib.faults, "point",
                      lambda name: runs.request_stop() if name == "filter_chunk" else None)
  with pytest.raises(runs.Preempted):
    runs.run_stage("filter", filter_lib.filter_dataset, config)
  assert os.listdir(os.path.join(config.workdir, "scores")) == ["chunk_00000.npz"]
  monkeypatch.undo()
  resumed = runs.run_stage("filter", filter_lib.filter_dataset, config)
  strip = lambda r: {k: v for k, v in r.items() if k != "output"}  # noqa: E731
  assert strip(resumed) == strip(whole)
  assert all(len(c["dropped"]) == 2 for c in whole["classes"])  # floor(7 * 0.4)


def test_filter_config_errors(setup, tmp_path):
  from synth_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="nothing to filter"):
    filter_lib.filter_dataset(_config(setup, str(tmp_path), drop_fraction=0.0, drop_misclassified=False))
  with pytest.raises(ConfigError, match="drop_fraction=1.5"):
    filter_lib.filter_dataset(_config(setup, str(tmp_path), drop_fraction=1.5))


def test_class_names_take_disambiguated_names_from_prompts_json(tmp_path):
  from ml_collections import ConfigDict
  path = tmp_path / "prompts.json"
  path.write_text(json.dumps({"classes": [
      {"id": 0, "name": "crane", "disambiguated": "crane, a large wading bird", "prompts": []},
      {"id": 1, "name": "tabby_cat", "disambiguated": "", "prompts": []}]}))
  names = filter_lib._class_names(ConfigDict({"prompts_json": str(path)}),
                                  ["crane", "tabby_cat", "jet"])
  assert names == ["crane, a large wading bird", "tabby cat", "jet"]
