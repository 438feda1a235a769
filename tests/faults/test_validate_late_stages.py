"""Issue 20 for the stages that landed after its main work: finetune, report and plan refuse a bad
value on the command line with exit 2 and one line, before any work, and leave nothing behind
(no run directory, no logs/ folder, no <RUN_DIR>/report). Nothing here compiles a model."""
import json
import os

import pytest

from synth_jax import cli

from tests.faults.test_validate_first import _line  # one "exactly one error line" check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINETUNE = os.path.join(REPO, "configs", "finetune", "base.py")
SCRATCH = os.path.join(REPO, "configs", "finetune", "digits_scratch.py")
GENERATE = os.path.join(REPO, "configs", "generate", "base.py")


@pytest.fixture
def inputs(tmp_path):
  (tmp_path / "sd").mkdir()
  (tmp_path / "sd" / "model_index.json").write_text("{}")
  (tmp_path / "data" / "cat").mkdir(parents=True)
  return tmp_path


@pytest.mark.parametrize("spec, override, expected", [
    ("base", "ema_decay=1.5", "config.ema_decay=1.5 must be <= 1"),
    ("base", "model_path=MISSING", "config.model_path='MISSING' does not exist"),
    ("base", "init=lora", "config.init='lora' is not one of pretrained, scratch"),
    ("base", "resolution=500", "config.resolution=500 is not divisible by 8"),
    ("base", "grad_accum=3", "config.grad_accum=3 does not divide batch_size=32"),
    ("base", "batch_size=12", "batch_size / grad_accum=12 does not divide over 8"),
    ("base", "caption_dropout=1", "config.caption_dropout=1.0 must be <= 0.99"),
    ("base", "prompts_path=MISSING", "config.prompts_path='MISSING' does not exist"),
    ("base", "steps=0", "no length is set: steps, examples and epochs are all 0"),
    ("scratch", "resolution=18", "config.resolution=18 is not divisible by 4"),
    ("scratch", "scratch.scheduler.prediction_type=sample", "prediction_type='sample' is not one"),
    ("scratch", "workdir=DATA/run", "is inside its own input config.dataset"),
])
def test_finetune_bad_value_is_one_line_and_nothing_is_written(inputs, capfd, spec, override,
                                                               expected):
  path = (FINETUNE + f":model={inputs / 'sd'}," if spec == "base" else SCRATCH + ":")
  work = inputs / "w"
  override = override.replace("MISSING", "/nonexistent/x").replace("DATA", str(inputs / "data"))
  expected = expected.replace("MISSING", "/nonexistent/x")
  rc = cli.main(["finetune", "--config", f"{path}dataset={inputs / 'data'}",
                 f"--config.workdir={work}", f"--config.{override}"])
  assert rc == 2
  assert expected in _line(capfd)
  assert not work.exists() and os.listdir(inputs / "data") == ["cat"]


def test_invert_without_a_length_is_one_line_and_nothing_is_written(inputs, capfd):
  work = inputs / "w"
  rc = cli.main(["invert", "--config", os.path.join(REPO, "configs", "invert", "base.py") +
                 f":model={inputs / 'sd'},dataset={inputs / 'data'}", f"--config.workdir={work}",
                 "--config.steps=0"])
  assert rc == 2
  assert "no length is set: steps, examples and epochs are all 0; pass e.g. --config.steps=3000" in (
      _line(capfd))
  assert not work.exists()


def test_finetune_length_in_epochs_or_examples_follows_steps_from():
  """finetune and invert count their length as train's phases do (config.steps_from): steps, else
  examples, else epochs of the training images; the first > 0 wins."""
  from types import SimpleNamespace
  import numpy as np
  from synth_jax import config as config_lib
  from synth_jax.diffusion import finetune
  cfg = config_lib.load_config(FINETUNE + ":model=/m,dataset=d", [])
  data = SimpleNamespace(labels=np.zeros(100))
  assert finetune.total_steps(cfg, data) == 15000  # the config's steps
  cfg.steps, cfg.epochs = 0, 2.5
  assert finetune.total_steps(cfg, data) == round(250 / 32)
  cfg.examples = 64
  assert finetune.total_steps(cfg, data) == 2  # examples before epochs


def test_refused_generate_on_the_cli_leaves_no_log_folder(tmp_path, capfd):
  """The CLI opens <workdir>/logs/host-0.log only after validation (it used to leave it behind)."""
  rc = cli.main(["generate", "--config", f"{GENERATE}:model=/nonexistent",
                 f"--config.workdir={tmp_path / 'g'}", "--config.steps=-1"])
  assert rc == 2 and "config.steps=-1 must be >= 1" in _line(capfd)
  assert os.listdir(tmp_path) == []


def test_report_asks_for_run_dir_and_leaves_nothing_behind(tmp_path, capfd):
  assert cli.main(["report"]) == 2
  assert "report needs the sweep directory: synth-jax report RUN_DIR" in _line(capfd)
  missing = tmp_path / "nope"
  assert cli.main(["report", str(missing)]) == 2
  assert f"config.run_dir='{missing}' does not exist" in _line(capfd)
  assert os.listdir(tmp_path) == []  # no <dir>/report, no logs
  (tmp_path / "train_run").mkdir()
  (tmp_path / "train_run" / "results.json").write_text(json.dumps({"top1": 0.5}))
  assert cli.main(["report", str(tmp_path / "train_run")]) == 2
  assert "holds no sweep results" in _line(capfd)
  assert os.listdir(tmp_path / "train_run") == ["results.json"]
  (tmp_path / "sweep").mkdir()
  (tmp_path / "sweep" / "results.json").write_text(json.dumps({"cells": []}))
  assert cli.main(["report", str(tmp_path / "sweep"), "--config.sheet_per_class=0"]) == 2
  assert "config.sheet_per_class=0 must be >= 1" in _line(capfd)
  assert os.listdir(tmp_path / "sweep") == ["results.json"]


@pytest.mark.parametrize("args, expected", [
    (["--devices", "0"], "--devices=0 must be an integer in [1, 65536]"),
    (["--chip", "h100,tpu9"], "chip 'tpu9' is unknown"),
    (["--chip", ","], "names no chip"),
    (["--config.batch_size=0"], "config.batch_size=0 must be >= 1"),
    (["--config.dtype=int8"], "config.dtype='int8' is not one of"),
])
def test_plan_refuses_bad_values_in_one_line_before_compiling(capfd, monkeypatch, args, expected):
  from synth_jax.train import plan
  monkeypatch.setattr(plan, "PLANNERS", {})  # reaching a planner (a compile) would be a KeyError
  rc = cli.main(["plan", "--config", f"{GENERATE}:model=tiny", *args])
  assert rc == 2
  assert expected in _line(capfd)
