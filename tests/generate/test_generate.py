"""The generate job: artifact format, determinism, resume after kill -9 / SIGTERM, bad configs."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax.diffusion import generate
from synth_jax.errors import ConfigError, DataError
from tests.generate.fake import FakeSampler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs", "generate", "base.py")
MESH = ("mesh.data=2", "mesh.tensor=-1")  # 8 fake devices, 2 data-parallel: batch 2, 4, 8 divide


def _config(workdir, *overrides, arg="n=5,resolution=16"):
  return config_lib.load_config(f"{BASE}:{arg}", [f"workdir={workdir}", "class_names=cat,dog,bird",
                                                  "batch_size=2", "images_per_shard=4",
                                                  *MESH,
                                                  *overrides])


def _run(cfg, delay=0.0):
  samplers = []
  def factory(c):
    samplers.append(FakeSampler(c, delay))
    return samplers[-1]
  return generate.generate(cfg, factory), samplers


def _digest(dataset_dir):
  """sha256 of every shard (the dataset bytes) and the records' metadata."""
  names = sorted(n for n in os.listdir(dataset_dir) if ".array_record-" in n and n[0] != ".")
  return {n: hashlib.sha256(open(os.path.join(dataset_dir, n), "rb").read()).hexdigest()
          for n in names}


@pytest.fixture(scope="module")
def ref_digest(tmp_path_factory):
  """The uninterrupted one-process dataset's shard digests, shared by the resume/multi-host tests."""
  out, _ = _run(_config(tmp_path_factory.mktemp("ref") / "ref"))
  return _digest(out)


def _env():
  return {**os.environ, "PYTHONPATH": ROOT, "SYNTH_JAX_NO_PROGRESS": "1", "JAX_PLATFORMS": "cpu"}


def test_dataset_readable_with_labels_prompts_seeds(tmp_path):
  import tensorflow_datasets as tfds
  from synth_jax.data import synthetic
  path, (sampler,) = _run(_config(tmp_path / "g"))
  builder = tfds.builder_from_directory(path)
  assert builder.info.features["label"].names == ["cat", "dog", "bird"]
  source = builder.as_data_source("train")
  assert len(source) == 15
  rows = [source[i] for i in range(15)]
  assert [int(r["label"]) for r in rows] == [0] * 5 + [1] * 5 + [2] * 5
  assert {r["class_name"].decode() if isinstance(r["class_name"], bytes) else r["class_name"]
          for r in rows} == {"cat", "dog", "bird"}
  prompt = rows[6]["prompt"]
  prompt = prompt.decode() if isinstance(prompt, bytes) else prompt
  assert prompt == "a good photo of the dog"  # Li et al.'s single template, the default
  assert int(rows[6]["seed"]) == generate.item_seed(0, 1, 1)
  expected = FakeSampler(_config(tmp_path / "x"))([prompt], "", [generate.item_seed(0, 1, 1)], 7.5)[0]
  np.testing.assert_array_equal(np.asarray(rows[6]["image"]), expected)
  # our reader maps the synthetic labels to a real dataset's order by name
  stream = synthetic.open_synthetic(path, ["bird", "cat", "dog"])
  assert stream.label_map.tolist() == [1, 2, 0]
  assert {f"contact_sheet_{c}.png" for c in ("cat", "dog", "bird")} <= set(os.listdir(tmp_path / "g"))
  from PIL import Image
  sheet = np.asarray(Image.open(tmp_path / "g" / "contact_sheet_dog.png"))
  assert sheet.shape == (2 * 16, 4 * 16, 3)  # 5 images, 4 per row
  np.testing.assert_array_equal(sheet[16:, :16], np.asarray(rows[9]["image"]))  # dog #4
  assert not sheet[16:, 16:].any()  # the rest of the second row is empty
  # rerunning a finished job does nothing
  _, samplers = _run(_config(tmp_path / "g"))
  assert samplers == []


def test_jpeg_dataset(tmp_path):
  import tensorflow_datasets as tfds
  path, _ = _run(_config(tmp_path / "j", "image_format=jpeg", "jpeg_quality=90"))
  source = tfds.builder_from_directory(path).as_data_source("train")
  row = source[0]
  expected = FakeSampler(_config(tmp_path / "x"))(["a good photo of the cat"], "",
                                                  [generate.item_seed(0, 0, 0)], 7.5)[0]
  assert np.asarray(row["image"]).shape == expected.shape
  raw = open(next(os.path.join(path, n) for n in sorted(os.listdir(path))
                  if ".array_record-" in n), "rb").read()
  assert b"\xff\xd8\xff" in raw  # JPEG streams, not PNG
  assert b"\x89PNG" not in raw


def test_rerun_with_other_settings_is_refused_not_mixed(tmp_path):
  work = tmp_path / "g"
  _run(_config(work, "images_per_shard=8"))
  _run(_config(work, "images_per_shard=8", "batch_size=4"))  # batch size: same images, allowed
  with pytest.raises(ConfigError, match=r"with different settings \['guidance'\]; use a new") as e:
    _run(_config(work, "images_per_shard=8", "guidance=3.0"))
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match=r"different images \(seed.*; 15 -> 15 images\)"):
    _run(_config(work, "images_per_shard=8", "seed=1"))
  with pytest.raises(ConfigError, match=r"15 -> 18 images"):
    _run(_config(work, "images_per_shard=8", "images_per_class=6"))
  # the architecture folder of a single-file checkpoint can change the images too
  with pytest.raises(ConfigError, match=r"different settings \['single_file_config'\]"):
    _run(_config(work, "images_per_shard=8", f"single_file_config={tmp_path}"))


def test_same_images_for_any_batch_size(tmp_path):
  a, _ = _run(_config(tmp_path / "a", "batch_size=2"))
  b, _ = _run(_config(tmp_path / "b", "batch_size=8"))
  assert _digest(a) == _digest(b)


def _prompts_json(tmp_path, prompts, **meta):
  path = tmp_path / "prompts.json"
  path.write_text(json.dumps({"classes": [{"id": 0, "name": "cat", "prompts": prompts}],
                              "meta": meta}))
  return str(path)


def _plan(cfg):
  class_list = generate.load_classes(cfg)
  return generate.plan_items(cfg, class_list.classes, class_list.weights)


def test_prompt_choice_by_kind_weights_is_deterministic(tmp_path):
  prompts = [{"text": f"a photo of a cat ({i})", "kind": "template"} for i in range(3)] + [
      {"text": "a cat in a kitchen", "kind": "cd"}, {"text": "a cat, watercolor", "kind": "sd"}]
  cfg = _config(tmp_path / "p", f"prompts_path={_prompts_json(tmp_path, prompts)}",
                "images_per_class=300")
  items = _plan(cfg)
  assert items == _plan(cfg)
  assert {it["prompt"] for it in items} == {p["text"] for p in prompts}
  # weights are per kind: 3 templates and 1 cd prompt each get a third of the images
  kinds = [it["kind"] for it in items]
  assert all(70 <= kinds.count(k) <= 130 for k in ("template", "cd", "sd")), kinds
  # the first images keep their prompts when more are asked for (index-wise draws)
  cfg.images_per_class = 10
  assert _plan(cfg) == items[:10]
  cfg.images_per_class = 300
  cfg.prompt_weights = {"cd": 1.0}  # unlisted kinds weigh 0
  assert {it["prompt"] for it in _plan(cfg)} == {"a cat in a kitchen"}
  cfg.prompt_weights = {"dsi": 1.0}
  with pytest.raises(ConfigError, match=r"class 'cat' \(kinds \['template', 'cd', 'sd'\]\) no pos"):
    _plan(cfg)
  cfg.prompt_weights = {"cdd": 1.0}
  with pytest.raises(ConfigError, match=r"prompt_weights=\{'cdd': 1.0\} must be a dict over") as e:
    _run(cfg)
  assert "\n" not in str(e.value)


def test_prompts_json_recorded_weights_subset_ids_and_incomplete(tmp_path):
  """prompts.json as the prompts stage writes it: meta weights/class_names, subset ids, complete."""
  from synth_jax.prompts import artifact, diversify
  names = ["ant", "bee", "cow", "dog"]
  entries = [{"id": i, "name": names[i], "prompts": diversify.class_prompts(
      names[i], ["template", "sd"], styles=["a sketch", "an oil painting"])} for i in (1, 3)]
  meta = {"complete": True, "num_classes": 4, "class_names": names,
          "weights": {"template": 0.0, "cd": 1.0, "sd": 1.0, "dsi": 1.0}}
  path = artifact.write(str(tmp_path / "p"), entries, meta)
  out, _ = _run(_config(tmp_path / "g", f"prompts_path={path}", "images_per_class=3"))
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert builder.info.features["label"].names == names
  rows = [builder.as_data_source("train")[i] for i in range(6)]
  assert [int(r["label"]) for r in rows] == [1, 1, 1, 3, 3, 3]
  sd = {p["text"] for e in entries for p in e["prompts"] if p["kind"] == "sd"}
  assert all(r["prompt"].decode() in sd for r in rows)  # recorded weights: no templates
  assert [int(r["seed"]) for r in rows[3:]] == [generate.item_seed(0, 3, i) for i in range(3)]
  path = artifact.write(str(tmp_path / "q"), entries[:1], {**meta, "complete": False})
  with pytest.raises(DataError, match="is incomplete \\(1 classes written\\)"):
    _run(_config(tmp_path / "h", f"prompts_path={path}"))


def test_dsi_prompt_needs_style_token(tmp_path):
  prompts = [{"text": "a cat photo in the style of <dsi>", "kind": "dsi"}]
  cfg = _config(tmp_path / "d", f"prompts_path={_prompts_json(tmp_path, prompts)}")
  with pytest.raises(ConfigError, match="style_token_path is empty") as e:
    _run(cfg)
  assert "\n" not in str(e.value)
  cfg.style_token_path = str(tmp_path / "learned_embeds.safetensors")  # passed on to the sampler
  path, (sampler,) = _run(cfg)
  assert sampler.config.style_token_path == cfg.style_token_path


def test_multi_host_processes_write_their_own_shards(tmp_path, monkeypatch, ref_digest):
  """Process p of 2 writes shards p, p+2, ...; process 0 finalizes; same bytes as one process."""
  import jax
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  out, (s1,) = _run(_config(tmp_path / "mh"))
  assert sorted(n.split("-")[-3] for n in os.listdir(out) if n.startswith("synthetic-")) == [
      "00001", "00003"]  # 15 images in shards of 4: shards 1 and 3 (4 + 3 images)
  assert not os.path.exists(os.path.join(out, "dataset_info.json"))
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  out, (s0,) = _run(_config(tmp_path / "mh"))
  assert s0.calls == 2 * 2 and s1.calls == 2 + 2  # batch 2: shards 0, 2 (8 imgs) / 1, 3 (7 imgs)
  assert _digest(out) == ref_digest
  assert os.path.exists(os.path.join(out, "dataset_info.json"))


def test_shard_records_are_per_shard_files_merged_by_process_0(tmp_path, monkeypatch):
  """No shared read-modify-write: process 1 writes only its shards' own record files, never
  manifest.json; process 0 merges every record into manifest.json at the end (and removes them)."""
  import jax
  from synth_jax import files
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  out, _ = _run(_config(tmp_path / "mh"))
  assert not os.path.exists(os.path.join(out, files.MANIFEST))
  records = sorted(n for n in os.listdir(out) if n.endswith(".record.json"))
  assert [r.split("-")[-3] for r in records] == ["00001", "00003"]  # .<shard>.record.json
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  out, _ = _run(_config(tmp_path / "mh"))
  manifest = files.read_manifest(out)
  assert sorted(n.split("-")[-3] for n in manifest) == ["00000", "00001", "00002", "00003"]
  assert not [n for n in os.listdir(out) if n.endswith(".record.json")]
  for name, entry in manifest.items():
    assert entry == files.file_entry(os.path.join(out, name))


def test_process0_waiting_on_sigterm_raises_preempted(tmp_path, monkeypatch):
  import jax
  from synth_jax import runs
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  from synth_jax.diffusion import generate_finish
  stops = iter([False] * 6 + [True] * 100)  # 4 batches render, waits twice, then SIGTERM
  monkeypatch.setattr(runs, "should_stop", lambda: next(stops))
  monkeypatch.setattr(generate_finish, "POLL_S", 0.01)
  with pytest.raises(runs.Preempted, match="waiting for 2 shards of other processes"):
    _run(_config(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "synthetic" / "1.0.0" / "dataset_info.json")


@pytest.mark.parametrize("point", ["generate_shard:2", "generate_batch:3", "atomic_write:2"])
def test_kill9_then_rerun_equals_uninterrupted(tmp_path, point, ref_digest):
  work = str(tmp_path / "killed")
  cmd = [sys.executable, "-m", "tests.generate.fake", work]
  killed = subprocess.run(cmd, cwd=ROOT, env={**_env(), "SYNTH_JAX_KILL_AT": point},
                          capture_output=True, text=True, timeout=300)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  out = os.path.join(work, "synthetic", "1.0.0")
  assert _digest(out) == ref_digest
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_sigterm_keeps_shards_and_exits_0(tmp_path, ref_digest):
  work = str(tmp_path / "t")
  cmd = [sys.executable, "-m", "tests.generate.fake", work, "0.3"]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  out = os.path.join(work, "synthetic", "1.0.0")
  deadline = time.time() + 120
  while time.time() < deadline and not (
      os.path.isdir(out) and any(".array_record-" in n for n in os.listdir(out))):
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 0, stderr[-2000:]
  assert "SIGTERM" in stdout + stderr
  assert not os.path.exists(os.path.join(out, "dataset_info.json"))
  again = subprocess.run(cmd[:-1], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert _digest(out) == ref_digest


@pytest.mark.parametrize("override,message", [
    ("images_per_class=0", "images_per_class=0 must be >= 1"),
    ("resolution=100", "resolution=100 is not divisible by 8"),
    ("guidance=80.0", "guidance=80.0 is outside \\[0, 50\\]"),
    ("steps=0", "steps=0 must be >= 1"),
    ("template=a photo", "has no '{}'"),
    ("image_format=webp", "image_format='webp' is not png or jpeg"),
    ("jpeg_quality=0", "jpeg_quality=0 is outside 1..100"),
])
def test_bad_config_is_one_line(tmp_path, override, message):
  with pytest.raises(ConfigError, match=message) as e:
    _run(_config(tmp_path / "bad", override))
  assert "\n" not in str(e.value)


def test_batch_not_divisible_by_data_devices(tmp_path):
  from synth_jax.errors import MeshError
  cfg = _config(tmp_path / "m", "batch_size=4", "mesh.data=-1", "mesh.tensor=1")  # 8 devices
  with pytest.raises(MeshError, match="batch_size=4 does not divide over 8") as e:
    _run(cfg)
  assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "m" / "synthetic")


def test_broken_model_folder_is_one_line_weights_error(tmp_path):
  """The real sampler factory's WeightsError (folder present, no model_index.json) propagates."""
  from synth_jax.errors import WeightsError
  (tmp_path / "sd").mkdir()
  cfg = _config(tmp_path / "w", f"model_path={tmp_path / 'sd'}")
  with pytest.raises(WeightsError, match="model_index.json") as e:
    generate.generate(cfg)
  assert "\n" not in str(e.value)


def test_single_file_model_path_goes_to_diffusers_conversion(tmp_path):
  """A file as model_path passes the folder check and is converted by diffusers (here: garbage)."""
  from synth_jax.errors import WeightsError
  ckpt = tmp_path / "model.safetensors"
  ckpt.write_bytes(b"not a checkpoint")
  cfg = _config(tmp_path / "w", f"model_path={ckpt}", f"single_file_config={tmp_path}")
  with pytest.raises(WeightsError, match="diffusers could not convert .*model.safetensors") as e:
    generate.generate(cfg)
  assert "\n" not in str(e.value)


def test_unknown_class_name_lists_close_matches(tmp_path):
  cfg = _config(tmp_path / "u")
  cfg.classes = ["dgo"]
  with pytest.raises(ConfigError, match=r"unknown class name\(s\) \['dgo'\].*'dog'"):
    _run(cfg)


def test_cli_missing_model_folder_is_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "synth_jax.cli", "generate", "--config", f"{BASE}:model={tmp_path}/nope",
       f"--config.workdir={tmp_path}/w", "--config.class_names=cat,dog"],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  lines = [l for l in out.stderr.strip().splitlines() if not l.startswith("20")]  # log lines
  assert lines[-1].startswith("error: pipeline folder") and "nope" in lines[-1]
  assert not os.path.exists(tmp_path / "w" / "synthetic")
  assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_real_sampler_cli_kill9_resume_same_bytes(tmp_path):
  """The tiny SD through the CLI: killed after the first shard, resumed == uninterrupted."""
  from synth_jax.diffusion import tiny
  model = tiny.make_tiny_pipeline(str(tmp_path / "sd"), sample_size=8)
  def cli(workdir, env):
    return subprocess.run(
        [sys.executable, "-m", "synth_jax.cli", "generate", "--config", f"{BASE}:model={model},n=3,resolution=16",
         f"--config.workdir={workdir}", "--config.class_names=cat,dog", "--config.batch_size=8",
         "--config.images_per_shard=2", "--config.steps=2", "--config.dtype=float32"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  ref = cli(tmp_path / "ref", _env())
  assert ref.returncode == 0, ref.stderr[-2000:]
  killed = cli(tmp_path / "k", {**_env(), "SYNTH_JAX_KILL_AT": "generate_shard:1"})
  assert killed.returncode == -signal.SIGKILL
  again = cli(tmp_path / "k", _env())
  assert again.returncode == 0, again.stderr[-2000:]
  assert _digest(tmp_path / "k" / "synthetic" / "1.0.0") == _digest(tmp_path / "ref" / "synthetic" / "1.0.0")
