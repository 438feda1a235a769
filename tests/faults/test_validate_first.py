"""Issue 20: validate before work, record only what ran, never mix data, parse like users write.

The first four tests are the issue's examples (each failed on the code before the fix); the rest
check the shared mechanisms (runs.run_stage + checks.VALIDATORS, cli.split_overrides,
files.safe_name / umask, sweep axis syntax).
"""
import json
import os
import stat

import pytest
from PIL import Image

from synth_jax import checks, cli, config as config_lib, files, runs
from synth_jax.errors import ConfigError, DataError, RunDirError, WeightsError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMPORT = os.path.join(REPO, "configs", "data", "import.py")
TRAIN = os.path.join(REPO, "configs", "train", "base.py")
GENERATE = os.path.join(REPO, "configs", "generate", "base.py")


def _photos(root, n=5):
  for c, color in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
    os.makedirs(root / c, exist_ok=True)
    for i in range(n):
      Image.new("RGB", (20 + i, 20), color).save(root / c / f"{i}.jpg", quality=95)
  return root


def _line(capfd):
  err = capfd.readouterr().err
  assert "Traceback" not in err and "internal error" not in err, err
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, err
  return lines[0]


def _snapshot(path):
  out = {}
  for root, dirs, names in os.walk(path):
    for n in names + [d + "/" for d in dirs]:
      p = os.path.join(root, n.rstrip("/"))
      out[os.path.relpath(p, path) + ("/" if n.endswith("/") else "")] = (
          None if n.endswith("/") else open(p, "rb").read())
  return out


# ---- the four examples ------------------------------------------------------------------
def test_reimport_with_other_test_fraction_is_refused_not_leaked(tmp_path, capfd):
  src, data_dir = _photos(tmp_path / "photos"), tmp_path / "tfds"

  def run(work, fraction):
    return cli.main(["data", "import", "--config", f"{IMPORT}:name=pets",
                     f"--config.data.source={src}", f"--config.data.data_dir={data_dir}",
                     f"--config.workdir={work}", f"--config.data.test_fraction={fraction}"])
  assert run(tmp_path / "a", 0.0) == 0
  before = _snapshot(data_dir)
  assert run(tmp_path / "b", 0.4) == 2  # another run dir, the same dataset dir
  line = _line(capfd)
  assert "imported with other settings ['test_fraction']" in line and "delete" in line
  assert _snapshot(data_dir) == before  # no test split beside the old train split
  assert not (tmp_path / "b").exists()
  assert run(tmp_path / "a", 0.4) == 2  # the same run dir: its record refuses it first
  assert "other settings ['data.test_fraction']" in _line(capfd)
  assert _snapshot(data_dir) == before


def test_sweep_values_whose_sanitised_names_collide_get_their_own_points(tmp_path):
  from synth_jax.train import sweep
  seen = []

  def fake_train(cfg):
    seen.append(cfg.train_split)
    files.write_json(os.path.join(cfg.workdir, "results.json"),
                     {"top1": 0.5, "top5": 1.0, "split": cfg.train_split})
    return {}
  cfg = config_lib.load_config(f"{TRAIN}:smoke", [f"workdir={tmp_path / 'grid'}"])
  out = sweep.sweep(cfg, ["train_split=a/b,a_b"], train_fn=fake_train)
  assert sorted(seen) == ["a/b", "a_b"] and len(out["points"]) == 2
  dirs = os.listdir(tmp_path / "grid" / "points")
  assert len(dirs) == 2
  got = {json.load(open(tmp_path / "grid" / "points" / d / "results.json"))["split"] for d in dirs}
  assert got == {"a/b", "a_b"}


def test_rerun_of_finished_train_with_other_settings_is_refused_and_record_kept(tmp_path):
  from synth_jax.train import stage
  work = tmp_path / "run"
  cfg = config_lib.load_config(f"{TRAIN}:smoke", [f"workdir={work}"])
  runs.run_stage("train", lambda c: files.write_json(str(work / "results.json"),
                                                     {"top1": 0.1}), cfg)
  record = {n: (work / n).read_bytes() for n in ("config.json", "config.train.json")}
  other = config_lib.load_config(f"{TRAIN}:smoke", [f"workdir={work}", "seed=1",
                                                    "phase2.learning_rate=0.5"])
  with pytest.raises(RunDirError, match=r"other settings \['phase2.learning_rate', 'seed'\]") as e:
    runs.run_stage("train", stage.train, other)
  assert "\n" not in str(e.value) and "pass a new --config.workdir" in str(e.value)
  assert {n: (work / n).read_bytes() for n in record} == record
  # mesh and workers do not change the outputs: a rerun may change them
  same = config_lib.load_config(f"{TRAIN}:smoke", [f"workdir={work}", "workers=2"])
  assert runs.run_stage("train", stage.train, same) == {"top1": 0.1}


def test_refused_generate_setting_is_not_recorded(tmp_path):
  from synth_jax.diffusion import generate
  broken = tmp_path / "sd"
  broken.mkdir()  # a folder, but no model_index.json: refused when the model loads
  work = tmp_path / "g"
  cfg = config_lib.load_config(f"{GENERATE}:n=2,resolution=16", [
      f"workdir={work}", f"model_path={broken}", "class_names=cat,dog", "batch_size=8"])
  with pytest.raises(WeightsError):
    runs.run_stage("generate", generate.generate, cfg)
  assert not work.exists()  # no generate_plan.json, no config.json, no empty folder
  cfg.attention = "cudnn"  # needs a GPU: refused by validation, before anything
  with pytest.raises(ConfigError, match="attention='cudnn' needs a GPU"):
    runs.run_stage("generate", generate.generate, cfg)
  assert not work.exists()


# ---- rule 1: validate before work; a refused run leaves the run dir as found --------------------
def test_refused_run_leaves_an_existing_run_dir_as_found(tmp_path, capfd):
  work = tmp_path / "run"
  work.mkdir()
  (work / "notes.txt").write_text("mine")
  before = _snapshot(work)
  for bad, needle in (("--config.mix_ratio=2", "config.mix_ratio=2.0 must be <= 1"),
                      ("--config.shots=0", "config.shots=0 selects nothing"),
                      ("--config.phase2.learning_rate=nan", "is not a finite number"),
                      ("--config.augment.resolution=100000", "must be <= 4096"),
                      ("--config.dataset=/nonexistent/x", "is not in the registry")):
    assert cli.main(["train", "--config", f"{TRAIN}:smoke", f"--config.workdir={work}", bad]) == 2
    assert needle in _line(capfd)
    assert _snapshot(work) == before
  assert cli.main(["train", "--config", f"{TRAIN}:smoke", f"--config.workdir={work}/sub/deeper",
                   "--config.dataset=/nonexistent"]) == 2
  _line(capfd)
  assert _snapshot(work) == before  # new parents removed too


def test_run_dir_inside_its_own_input_is_refused(tmp_path, capfd):
  src = _photos(tmp_path / "photos")
  assert cli.main(["data", "import", "--config", f"{IMPORT}:name=pets",
                   f"--config.data.source={src}", f"--config.workdir={src / 'out'}"]) == 2
  assert "is inside the import source" in _line(capfd)
  assert not (src / "out").exists()


def test_import_cross_field_rules(tmp_path, capfd):
  one = tmp_path / "one"
  os.makedirs(one / "cat")
  Image.new("RGB", (8, 8)).save(one / "cat" / "a.jpg")
  argv = ["data", "import", "--config", f"{IMPORT}:name=pets", f"--config.workdir={tmp_path / 'w'}"]
  assert cli.main(argv + [f"--config.data.source={one}"]) == 2
  assert "a classifier needs at least 2 classes" in _line(capfd)
  src = _photos(tmp_path / "photos", n=2)
  assert cli.main(argv + [f"--config.data.source={src}", "--config.data.test_fraction=0.1"]) == 2
  assert "leaves the test split empty" in _line(capfd)
  assert cli.main(argv + [f"--config.data.source={src}", "--config.data.name=Bad Name!"]) == 2
  assert "is not a dataset name" in _line(capfd)
  assert not (tmp_path / "w").exists()


# ---- rule 3: record only what ran, for any stage -----------------------------------------------
def test_rerun_with_other_settings_is_refused_for_any_stage(tmp_path, monkeypatch):
  monkeypatch.setitem(checks.VALIDATORS, "newstage", None)
  monkeypatch.delitem(checks.VALIDATORS, "newstage")  # a stage with no validator registered
  cfg = config_lib.ConfigDict({"workdir": str(tmp_path / "r"), "a": {"b": 1}, "c": "x"})
  runs.run_stage("newstage", lambda c: None, cfg)
  cfg.a.b = 2
  with pytest.raises(RunDirError, match=r"newstage run with other settings \['a.b'\] \(a.b: "
                     r"recorded 1, now 2\)"):
    runs.run_stage("newstage", lambda c: None, cfg)
  assert json.load(open(tmp_path / "r" / "config.json"))["a"]["b"] == 1


# ---- rule 4: sweep values ------------------------------------------------------------------------
def test_sweep_values_may_hold_commas_and_colons_and_repeats_are_refused():
  from synth_jax.train import sweep
  assert sweep.parse_axes(['model="resnet:basic:1,1,1,1",resnet18']) == [
      ("model", ["resnet:basic:1,1,1,1", "resnet18"])]
  assert sweep.parse_axes(['model=["resnet:basic:1,1,1,1", "vit_s16"]', "seed=[0, 1]"]) == [
      ("model", ["resnet:basic:1,1,1,1", "vit_s16"]), ("seed", ["0", "1"])]
  with pytest.raises(ConfigError, match="lists the value '1' twice"):
    sweep.parse_axes(["seed=0,1,1"])
  with pytest.raises(ConfigError, match="not valid JSON"):
    sweep.parse_axes(["seed=[0,"])
  names = {sweep.point_name([("model", v)]) for v in ("a:b", "a_b", "a/b", "x" * 500)}
  assert len(names) == 4 and all(len(n) < 200 for n in names)


def test_sweep_validates_every_point_before_the_first_runs(tmp_path):
  from synth_jax.train import sweep
  ran = []
  cfg = config_lib.load_config(f"{TRAIN}:smoke", [f"workdir={tmp_path / 'grid'}"])
  with pytest.raises(ConfigError, match=r"sweep point mix_ratio=1.5: config.mix_ratio=1.5 must be"):
    sweep.sweep(cfg, ["mix_ratio=0.5,1.5"], train_fn=ran.append)
  assert ran == [] and not (tmp_path / "grid" / "points").exists()


# ---- rule 5: parse like users write --------------------------------------------------------------
def test_cli_parses_like_users_write(tmp_path, capfd):
  ov, rest = cli.split_overrides(["train", "--config", "x.py", "--config.seed", "3",
                                  "--config.shots", "-1", "--config.flip=no"])
  assert ov == ["--config.seed=3", "--config.shots=-1", "--config.flip=no"]
  assert rest == ["train", "--config", "x.py"]
  assert cli.main(["train", "--config", TRAIN, "--config", TRAIN]) == 2
  assert "--config is given twice" in _line(capfd)
  assert cli.main(["train", "--config", os.path.join(REPO, "configs", "train")]) == 2
  assert "is a directory; pass a config file in it" in _line(capfd)
  assert cli.main(["train", "--config", f"{TRAIN}:smoke,batch_size=128",
                   f"--config.workdir={tmp_path}/w"]) == 2
  assert "'smoke' sets batch_size itself" in _line(capfd)
  cfg = config_lib.load_config(f"{TRAIN}:smoke", ["augment.flip=yes", "reinit_head=no",
                                                  "tensorboard=1", "fsdp=FALSE"])
  assert (cfg.augment.flip, cfg.reinit_head, cfg.tensorboard, cfg.fsdp) == (True, False, True, False)
  with pytest.raises(ConfigError, match=r"'phase1.mixup_alpha' expects a float, got 'x'"):
    config_lib.load_config(TRAIN, ["phase1.mixup_alpha=x"])
  assert config_lib.load_config(TRAIN, ["phase1.mixup_alpha=0.3"]).phase1.mixup_alpha == 0.3
  # argparse's own refusals are one line too (not the usage block), naming the flag and the value
  for argv, said in ((["plan", "--devices", "abc"], "--devices: invalid int value: 'abc'"),
                     (["train", "--num_processes", "two"], "--num_processes: invalid int value"),
                     (["trian"], "invalid choice: 'trian'")):
    with pytest.raises(SystemExit) as e:
      cli.main(argv)
    assert e.value.code == 2 and said in _line(capfd)


# ---- rule 6: names from user data are safe --------------------------------------------------------
@pytest.mark.parametrize("name", ["cat", "a/b", "a_b", "猫", "x", "..", "", "é"])
def test_file_names_from_class_names_fit_and_never_collide(tmp_path, name):
  for n in (name, name * 1000):  # any script, any length
    safe = files.safe_name(n)
    assert 0 < len(safe.encode()) <= files.MAX_NAME_BYTES and "/" not in safe
    assert safe not in (".", "..")
    files.write_text(str(tmp_path / f"contact_sheet_{safe}.png"), n)  # the filesystem takes it
  others = {files.safe_name(n) for n in ("cat", "a/b", "a_b", "猫" * 300, "猫" * 301, "é", "e")}
  assert len(others) == 7


def test_outputs_follow_the_umask(tmp_path):
  mask = os.umask(0o022)
  os.umask(mask)
  files.write_text(str(tmp_path / "x.json"), "{}")
  assert stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode) == 0o666 & ~mask


# ---- rule 2: input files are one line too -------------------------------------------------------
def test_bad_input_files_are_one_line(tmp_path, capfd):
  from synth_jax.diffusion import generate
  (tmp_path / "bin.csv").write_bytes(b"\x00\xff\xfe garbage\n")
  (tmp_path / "empty.csv").write_text("path,label\n")
  (tmp_path / "missing.csv").write_text("nope1.jpg,cat\nnope2.jpg,dog\n")
  for name, needle in (("bin.csv", "is not a UTF-8 text CSV"), ("empty.csv", "has no rows"),
                       ("missing.csv", "names 2 file(s) that do not exist")):
    assert cli.main(["data", "import", "--config", f"{IMPORT}:name=x,source={tmp_path / name}",
                     f"--config.workdir={tmp_path / 'w'}"]) == 2
    assert needle in _line(capfd)
  assert not (tmp_path / "w").exists()
  (tmp_path / "p.json").write_text(json.dumps({"classes": ["cat"]}))
  cfg = config_lib.load_config(GENERATE, [f"workdir={tmp_path / 'g'}",
                                          f"prompts_path={tmp_path / 'p.json'}"])
  with pytest.raises(DataError, match=r"p.json is not a valid prompts.json \(AttributeError"):
    generate.load_classes(cfg)
  cfg.prompts_path = str(tmp_path)
  with pytest.raises(ConfigError, match="is a folder; pass the prompts.json file in it"):
    generate.load_classes(cfg)
