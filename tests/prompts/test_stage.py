"""The prompts stage: disambiguation with a constructed CLIP, resume without LLM calls, determinism,
class sources and subsets, and the CLI end to end with a JSON answers file."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synth_jax import config as config_lib
from synth_jax.errors import ConfigError, LLMError
from synth_jax.prompts import artifact, disambiguate, diversify, stage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs", "prompts", "base.py")
YU = os.path.join(ROOT, "configs", "prompts", "yu.py")
# Which meaning each image colour shows: red = animal, green = machine, blue = food.
AXES = {"bird": 0, "animal": 0, "machine": 1, "device": 1, "food": 2, "dish": 2}
COLOURS = {0: (220, 10, 10), 1: (10, 220, 10), 2: (10, 10, 220)}


class FakeClip:
  """Text -> the axis of the first meaning keyword it contains; image -> its dominant colour.

  So the right candidate for a class whose images are red is the one that says "bird"/"animal".
  """

  def __init__(self):
    self.text_calls = self.image_calls = 0

  @staticmethod
  def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)

  def embed_text(self, texts):
    self.text_calls += 1
    out = []
    for t in texts:
      axis = next((a for k, a in AXES.items() if k in t), None)
      v = np.full(4, 0.05)
      v[3 if axis is None else axis] = 1.0
      out.append(v)
    return self._unit(out)

  def embed_images(self, images):
    self.image_calls += 1
    return self._unit([np.r_[np.asarray(im, np.float64).reshape(-1, 3).mean(0), 0.0] + 1.0
                       for im in images])


class CountingLLM:
  """A text LLM that answers meanings/contexts prompts in bullet lists; counts calls per class."""
  identity = "fake-llm:v1"

  MEANINGS = {"crane": ["crane, a large wading bird", "crane, a machine that lifts loads"],
              "mouse": ["mouse, a small animal", "mouse, a computer pointing device"],
              "jaguar": ["jaguar, a big cat animal", "jaguar, a car machine"]}

  def __init__(self, fail_at=None):
    self.calls, self.fail_at = [], fail_at

  def generate(self, prompt, *, seed):
    name = prompt.split('"')[1].split(",")[0]
    self.calls.append(name)
    if self.fail_at is not None and len(self.calls) == self.fail_at:
      raise KeyboardInterrupt  # the process dies mid-run
    if "refer to" in prompt:
      return "Here are the meanings:\n" + "\n".join(f"- {m}" for m in self.MEANINGS[name])
    return "\n".join(f"{i + 1}. scene {i} for {name} (seed {seed % 97})" for i in range(4))


@pytest.fixture
def image_folder(tmp_path):
  """crane: red (bird), mouse: green (device), jaguar: red (animal)."""
  root = tmp_path / "images"
  for name, axis in (("crane", 0), ("mouse", 1), ("jaguar", 0)):
    (root / name).mkdir(parents=True)
    for i in range(3):
      px = np.clip(np.array(COLOURS[axis]) + 10 * i, 0, 255).astype(np.uint8)
      Image.fromarray(np.tile(px, (6, 6, 1))).save(root / name / f"{i}.png")
  return str(root)


def _config(path, arg, workdir, *overrides):
  return config_lib.load_config(f"{path}:{arg}", [f"workdir={workdir}", *overrides])


def test_choose_picks_the_meaning_the_images_show():
  clip = FakeClip()
  red = [np.full((4, 4, 3), (200, 0, 0), np.uint8)] * 2
  got = disambiguate.choose(clip, ["crane, a lifting machine", "crane, a wading bird"], red)
  assert got["chosen"] == "crane, a wading bird" and got["index"] == 1
  assert got["scores"][1] > got["scores"][0] and got["images"] == 2


def test_yu_stage_disambiguates_and_resumes_without_llm_calls(tmp_path, image_folder):
  workdir = str(tmp_path / "run")
  # fixed styles here (yu.py asks the LLM for them): this test counts disambiguation + CD calls
  cfg = _config(YU, f"folder={image_folder},clip=fake", workdir, "llm.kind=hf", "sd.from_llm=False")
  cfg.cd.n = 4
  dying = CountingLLM(fail_at=5)  # 2 calls per class: dies on the first call of class 2
  with pytest.raises(KeyboardInterrupt):
    stage.prompts(cfg, llm_backend=dying, clip_model=FakeClip())
  partial = artifact.read(os.path.join(workdir, "prompts.json"))
  assert [c["name"] for c in partial["classes"]] == ["crane", "jaguar"]
  assert partial["meta"]["complete"] is False

  llm2, clip2 = CountingLLM(), FakeClip()
  path = stage.prompts(cfg, llm_backend=llm2, clip_model=clip2)
  assert llm2.calls == ["mouse", "mouse"]  # finished classes are not asked again
  assert clip2.image_calls == 1            # nor re-scored
  data = artifact.read(path)
  assert data["meta"]["complete"] is True
  chosen = {c["name"]: c["disambiguated"] for c in data["classes"]}
  assert chosen == {"crane": "crane, a large wading bird", "jaguar": "jaguar, a big cat animal",
                    "mouse": "mouse, a computer pointing device"}
  mouse = artifact.class_entry(data, "mouse")
  assert mouse["disambiguation"]["candidates"] == CountingLLM.MEANINGS["mouse"]
  assert len(mouse["disambiguation"]["scores"]) == 2
  kinds = [p["kind"] for p in mouse["prompts"]]
  assert kinds.count("cd") == 4 and kinds.count("sd") == len(cfg.sd.styles)
  assert all("mouse, a computer pointing device" in p["text"] for p in mouse["prompts"])

  # A finished run reruns with no LLM / CLIP call and the same bytes; so does a fresh run dir.
  before = open(path, "rb").read()
  llm3, clip3 = CountingLLM(), FakeClip()
  stage.prompts(cfg, llm_backend=llm3, clip_model=clip3)
  assert llm3.calls == [] and clip3.text_calls == clip3.image_calls == 0
  assert open(path, "rb").read() == before
  fresh = _config(YU, f"folder={image_folder},clip=fake", str(tmp_path / "fresh"), "llm.kind=hf",
                  "sd.from_llm=False")
  fresh.cd.n = 4
  assert open(stage.prompts(fresh, llm_backend=CountingLLM(), clip_model=FakeClip()),
              "rb").read() == before
  # A different seed changes the LLM seeds, hence the cache keys: the LLM is asked again.
  cfg.seed = 1
  llm4 = CountingLLM()
  stage.prompts(cfg, llm_backend=llm4, clip_model=FakeClip())
  assert len(llm4.calls) == 6


def test_garbage_llm_output_retries_then_names_the_class(tmp_path):
  class Garbage:
    identity = "garbage"
    calls = 0

    def generate(self, prompt, *, seed):
      Garbage.calls += 1
      return "!!! ??? ..." if Garbage.calls % 2 else ""
  cfg = _config(BASE, "classes=tabby_cat,strategies=template+cd", str(tmp_path / "r"),
                "llm.kind=hf", "llm.retries=2")
  with pytest.raises(LLMError, match=r"class 'tabby_cat'.*0 usable contexts after 3 tries") as e:
    stage.prompts(cfg, llm_backend=Garbage())
  assert Garbage.calls == 3 and "\n" not in str(e.value)


def test_class_sources_subset_and_errors(tmp_path, image_folder):
  names = tmp_path / "names.txt"
  names.write_text("golden_retriever\nboeing 747\n\n")
  cfg = _config(BASE, f"classes={names},strategies=template+dsi+sd", str(tmp_path / "a"),
                "dsi.token=<cars-style>", "template.family=li")
  cfg.sd.styles = ["a sketch"]
  data = artifact.read(stage.prompts(cfg))
  assert [c["name"] for c in data["classes"]] == ["golden_retriever", "boeing 747"]
  assert [p["text"] for p in data["classes"][0]["prompts"]] == [
      "a good photo of the golden retriever.", "a sketch of a golden retriever",
      "a golden retriever photo in the style of <cars-style>"]
  assert data["classes"][0]["disambiguated"] is None
  # Class names from a folder's sub-folders, a subset by name, ids kept from the full list.
  cfg = _config(BASE, f"folder={image_folder}", str(tmp_path / "b"))
  cfg.classes = ["mouse"]
  data = artifact.read(stage.prompts(cfg))
  assert [(c["id"], c["name"]) for c in data["classes"]] == [(2, "mouse")]
  assert data["meta"]["class_names"] == ["crane", "jaguar", "mouse"]
  cfg.classes = ["mose"]
  with pytest.raises(ConfigError, match=r"unknown class name 'mose' .*did you mean 'mouse'"):
    stage.prompts(cfg)
  cfg = _config(BASE, f"classes={names},strategies=template+cd", str(tmp_path / "c"))
  with pytest.raises(ConfigError, match="need an LLM"):
    stage.prompts(cfg)


def test_class_names_from_tfds_names_offline(tmp_path):
  """config.dataset as a NAME (no directory): a tfds builder whose info ships its class names
  (oxford_iiit_pet; tfds.testing.mock_data stands in for the download) and a dataset our writer
  put under data_dir, found by tfds.builder(name, data_dir=) with no mocking."""
  import tensorflow_datasets as tfds
  from synth_jax.data import folder
  want = list(tfds.builder("oxford_iiit_pet", data_dir=str(tmp_path)).info.features["label"].names)
  assert len(want) == 37 and want[-1] == "yorkshire_terrier"
  cfg = _config(BASE, "dataset=oxford_iiit_pet", str(tmp_path / "pets"),
                f"data_dir={tmp_path}", "template.family=simple")
  cfg.classes = ["yorkshire_terrier", "Abyssinian"]
  with tfds.testing.mock_data(num_examples=2):
    data = artifact.read(stage.prompts(cfg))
  assert data["meta"]["class_names"] == want
  assert [(c["id"], c["name"]) for c in data["classes"]] == [(0, "Abyssinian"),
                                                             (36, "yorkshire_terrier")]
  # The tfds name selects the registry's "pets" suffix.
  assert data["classes"][1]["prompts"][0]["text"] == (
      "a photo of a yorkshire terrier, a type of pet.")
  # A dataset written by `synth-jax data import` into data_dir, named instead of given as a dir.
  os.makedirs(tmp_path / "img")
  Image.new("RGB", (8, 8)).save(tmp_path / "img" / "x.png")
  folder.import_images({"train": [(str(tmp_path / "img" / "x.png"), 1)]}, ["kiwi", "lime"],
                       str(tmp_path / "tfds"), "my_fruit")
  cfg = _config(BASE, "dataset=my_fruit", str(tmp_path / "fruit"), f"data_dir={tmp_path / 'tfds'}")
  data = artifact.read(stage.prompts(cfg))
  assert data["meta"]["class_names"] == ["kiwi", "lime"]
  assert [p["text"] for c in data["classes"] for p in c["prompts"]] == [
      "a good photo of the kiwi.", "a good photo of the lime."]  # Li et al.'s default template


def test_cli_end_to_end_with_json_answers(tmp_path):
  answers = tmp_path / "answers.json"
  answers.write_text(json.dumps({
      "crane": {"contexts": ["in a marsh at dawn", "over a lake", "in tall grass"]},
      "tabby cat": {"contexts": ["on a sofa", "in a garden", "on a windowsill"]}}))
  workdir = tmp_path / "run"
  # (the class list goes in an override: a comma inside the `:arg` would split the arg)
  cmd = [sys.executable, "-m", "synth_jax.cli", "prompts", "--config",
         f"{BASE}:strategies=template+cd,llm={answers}", "--config.class_names=crane,tabby_cat",
         f"--config.workdir={workdir}"]
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1", JAX_PLATFORMS="cpu")
  r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert r.returncode == 0, r.stderr
  data = json.loads((workdir / "prompts.json").read_text())
  cat = data["classes"][1]
  assert cat["name"] == "tabby_cat" and cat["llm"]["contexts"]["items"][0] == "on a sofa"
  assert [p["text"] for p in cat["prompts"]][:2] == ["a good photo of the tabby cat.",
                                                    "a photo of a tabby cat, on a sofa"]
  assert (workdir / "config.json").exists()
  p = diversify.pick_prompt(cat, 0, cat["id"], 0, data["meta"]["weights"])
  assert p in cat["prompts"]
  # A class missing from the answers file: exit 2 and one line naming the class.
  answers.write_text(json.dumps({"crane": {"contexts": ["aa", "bb", "cc"]}}))
  r = subprocess.run(cmd[:-1] + [f"--config.workdir={tmp_path / 'run2'}"], capture_output=True,
                     text=True, env=env, cwd=ROOT, timeout=120)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith("error: class 'tabby_cat' has no 'contexts'")


class DigitsLLM:
  """Two meanings per digit name; counts calls."""
  identity = "digits-llm"

  def __init__(self):
    self.calls = 0

  def generate(self, prompt, *, seed):
    self.calls += 1
    name = prompt.split('"')[1]
    return f"1. {name}, a handwritten digit\n2. {name}, a printed number on a sign\n"


@pytest.mark.slow
def test_disambiguation_with_real_clip_matches_transformers(tmp_path):
  """The stage on a registry-format dataset dir with load_clip on a tiny random HF CLIP folder:
  recorded scores equal cosines computed with transformers' CLIPModel on the same images."""
  import torch
  from transformers import CLIPImageProcessorPil, CLIPTokenizer
  from synth_jax.data import digits
  from synth_jax.prompts import classnames
  from tests.clip import helpers
  data = digits.write_digits(str(tmp_path / "tfds"))
  clip_dir = str(tmp_path / "clip")
  model = helpers.hf_clip_folder(clip_dir, seed=2)
  cfg = _config(YU, f"dataset={data},clip={clip_dir}", str(tmp_path / "run"), "llm.kind=hf",
                "strategies=template", "disambiguate.images_per_class=4",
                "disambiguate.batch_size=8", "template.family=simple")
  cfg.classes = ["three", "seven"]
  fake = DigitsLLM()
  out = artifact.read(stage.prompts(cfg, llm_backend=fake))
  assert fake.calls == 2 and [c["id"] for c in out["classes"]] == [3, 7]
  source = classnames.open_classes(cfg)
  tok = CLIPTokenizer.from_pretrained(clip_dir)
  proc = CLIPImageProcessorPil.from_pretrained(clip_dir)
  worst = 0.0
  for c in out["classes"]:
    d = c["disambiguation"]
    images = source.images(c["name"], 4, 0)
    assert d["images"] == 4 and len(d["candidates"]) == 2
    enc = tok([f"a photo of a {x}." for x in d["candidates"]], padding="max_length",
              max_length=77, return_tensors="pt")
    with torch.no_grad():
      o = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                pixel_values=proc(images, return_tensors="pt")["pixel_values"])
    center = o.image_embeds.mean(0)  # image_embeds / text_embeds are L2-normalized
    ref = (o.text_embeds @ (center / center.norm())).numpy()
    worst = max(worst, float(np.abs(ref - np.array(d["scores"])).max()))
    assert d["index"] == int(np.argmax(ref)) or abs(ref[0] - ref[1]) < 1e-4
    assert c["prompts"][0]["text"] == f"a photo of the handwritten digit {d['chosen']}."
  print(f"disambiguation scores vs transformers CLIPModel: max-abs {worst:.1e}")
  assert worst <= 1e-4


def test_sigterm_saves_finished_classes_and_rerun_completes(tmp_path, image_folder, monkeypatch):
  from synth_jax import runs
  cfg = _config(BASE, f"folder={image_folder},strategies=template+cd", str(tmp_path / "r"),
                "llm.kind=hf", "cd.n=4")
  ref = _config(BASE, f"folder={image_folder},strategies=template+cd", str(tmp_path / "ref"),
                "llm.kind=hf", "cd.n=4")
  want = open(stage.prompts(ref, llm_backend=CountingLLM()), "rb").read()
  checks = iter([False, True])  # SIGTERM arrives while the first class is being built
  monkeypatch.setattr(runs, "should_stop", lambda: next(checks, True))
  with pytest.raises(runs.Preempted, match="1/3 classes saved"):
    stage.prompts(cfg, llm_backend=CountingLLM())
  monkeypatch.setattr(runs, "should_stop", lambda: False)
  llm2 = CountingLLM()
  path = stage.prompts(cfg, llm_backend=llm2)
  assert llm2.calls == ["jaguar", "mouse"]
  assert open(path, "rb").read() == want
  # prompts.json is what the generate job reads.
  from synth_jax.diffusion import generate
  gen = config_lib.load_config(os.path.join(ROOT, "configs", "generate", "base.py") +
                               f":prompts={path}")
  classes = generate.load_classes(gen).classes
  assert [c["name"] for c in classes] == ["crane", "jaguar", "mouse"]
  assert {p["kind"] for p in classes[0]["prompts"]} == {"template", "cd"}


def test_config_errors_before_any_call(tmp_path):
  for override, match in [("strategies=template,xx", "subset of"),
                          ("dsi.token=", "dsi.token is empty"),
                          ("sd.template={style} of a thing", r"lacks \{name\}"),
                          ("template.family=fancy", "family 'fancy'"),
                          ("weights.sd=-1", "no positive weight")]:
    strategies = "template+sd+dsi"
    cfg = _config(BASE, f"classes=a,strategies={strategies}", str(tmp_path / "r"), override)
    with pytest.raises(ConfigError, match=match):
      stage.prompts(cfg)
  cfg = _config(YU, "classes=a", str(tmp_path / "r"), "llm.kind=json")
  with pytest.raises(ConfigError, match="disambiguate.clip"):
    stage.prompts(cfg)


@pytest.mark.parametrize("kill_at", ["prompts_class:1", "atomic_write:4"])
def test_cli_kill9_then_rerun_equals_uninterrupted(tmp_path, kill_at):
  """kill -9 after class 0 is written, or while class 1's prompts.json is written but not yet
  renamed (atomic_write hits: config.json, config.prompts.json, class 0, class 1)."""
  answers = tmp_path / "answers.json"
  answers.write_text(json.dumps({n: {"contexts": [f"{n} scene {i}" for i in range(3)]}
                                 for n in ("crane", "mouse", "jaguar")}))
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1", JAX_PLATFORMS="cpu")

  def run(workdir, **extra):
    cmd = [sys.executable, "-m", "synth_jax.cli", "prompts", "--config",
           f"{BASE}:strategies=template+cd+sd,llm={answers}",
           "--config.class_names=crane,mouse,jaguar", f"--config.workdir={workdir}"]
    return subprocess.run(cmd, capture_output=True, text=True, env={**env, **extra}, cwd=ROOT,
                          timeout=120)
  assert run(tmp_path / "ref").returncode == 0
  killed = run(tmp_path / "run", SYNTH_JAX_KILL_AT=kill_at)
  assert killed.returncode == -9
  partial = artifact.read(str(tmp_path / "run" / "prompts.json"))
  assert [c["name"] for c in partial["classes"]] == ["crane"]
  assert run(tmp_path / "run").returncode == 0
  assert ((tmp_path / "run" / "prompts.json").read_bytes() ==
          (tmp_path / "ref" / "prompts.json").read_bytes())


def test_sd_styles_from_the_llm(tmp_path):
  answers = tmp_path / "answers.json"
  answers.write_text(json.dumps({"koi": {"styles": ["a woodblock print", "an ink wash painting",
                                                    "a mosaic"]}}))
  cfg = _config(BASE, f"classes=koi,strategies=sd,llm={answers}", str(tmp_path / "r"),
                "sd.from_llm=true")
  data = artifact.read(stage.prompts(cfg))
  assert [p["text"] for p in data["classes"][0]["prompts"]] == [
      "a woodblock print of a koi", "an ink wash painting of a koi", "a mosaic of a koi"]
  assert data["classes"][0]["llm"]["styles"]["items"][0] == "a woodblock print"
  cfg = _config(BASE, "classes=koi,strategies=sd", str(tmp_path / "r2"), "sd.from_llm=true")
  with pytest.raises(ConfigError, match="need an LLM"):
    stage.prompts(cfg)
