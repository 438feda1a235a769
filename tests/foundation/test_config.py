import json
import os

import pytest

from synth_jax import config as config_lib
from synth_jax.errors import ConfigError

HERE = os.path.join(os.path.dirname(__file__), "data", "example_config.py")


def test_load_with_arg_and_overrides():
  c = config_lib.load_config(HERE + ":size=big,steps=5",
                             ["--config.lr=0.5", "config.model.width=32", "use_mixup=false",
                              "classes=a,b,c", "optional=[1, 2]"])
  assert c.size == "big" and c.steps == 5
  assert c.lr == 0.5 and isinstance(c.lr, float)
  assert c.model.width == 32 and isinstance(c.model.width, int)
  assert c.use_mixup is False
  assert tuple(c.classes) == ("a", "b", "c")
  assert list(c.optional) == [1, 2]


def test_bare_word_arg_sets_bool():
  assert config_lib.load_config(HERE + ":smoke").steps == 1


def test_int_accepted_for_float_field():
  assert config_lib.load_config(HERE, ["lr=1"]).lr == 1.0


@pytest.mark.parametrize("override, needle", [
    ("model.widht=3", "did you mean model.width"),
    ("lrr=3", "did you mean lr"),
    ("model.width=abc", "expects an int, got 'abc'"),
    ("lr=fast", "expects a float"),
    ("use_mixup=maybe", "expects a bool"),
    ("model=3", "group of keys"),
    ("lr", "has no '='"),
])
def test_bad_override_names_key(override, needle):
  with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
    config_lib.load_config(HERE, [override])


def test_unknown_arg_lists_close_matches():
  with pytest.raises(ConfigError, match="did you mean size"):
    config_lib.load_config(HERE + ":sizee=3")


def test_missing_file_is_one_line_error():
  with pytest.raises(ConfigError, match="does not exist"):
    config_lib.load_config("nope/cfg.py")


def test_save_config_roundtrip(tmp_path):
  c = config_lib.load_config(HERE, ["lr=0.25"])
  path = config_lib.save_config(c, str(tmp_path))
  with open(path) as f:
    saved = json.load(f)
  assert saved["lr"] == 0.25 and saved["model"]["name"] == "resnet18"


def test_steps_from_units():
  import ml_collections
  c = ml_collections.ConfigDict({"s1_steps": None, "s1_epochs": 2, "s1_examples": None})
  assert config_lib.steps_from(c, "s1", examples_per_epoch=1000, batch_size=100) == 20
  c.s1_examples = 450  # examples beat epochs (and round to the nearest step)
  assert config_lib.steps_from(c, "s1", examples_per_epoch=1000, batch_size=100) == 4
  c.s1_steps = 5       # steps beat both
  assert config_lib.steps_from(c, "s1", examples_per_epoch=1000, batch_size=100) == 5
  c.s1_steps = c.s1_examples = 0  # <= 0 means unset
  assert config_lib.steps_from(c, "s1", examples_per_epoch=1000, batch_size=100) == 20
  c.s1_epochs = None
  with pytest.raises(ConfigError, match="no length is set"):
    config_lib.steps_from(c, "s1", examples_per_epoch=1000, batch_size=100)
  c = ml_collections.ConfigDict({"steps": None, "epochs": 1, "examples": None})
  with pytest.raises(ConfigError, match="epochs needs the dataset size"):
    config_lib.steps_from(c, examples_per_epoch=None, batch_size=10)


def test_one_dtype_spelling_and_parser():
  """`dtype` is a string in every stage's config; one parser turns it into a dtype or a one-line error."""
  import jax.numpy as jnp
  from synth_jax import config as config_lib
  from synth_jax.errors import ConfigError
  from synth_jax.train import state as state_lib
  root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
  for stage in ("train", "generate", "invert", "finetune"):
    c = config_lib.load_config(os.path.join(root, stage, "base.py"))
    assert isinstance(c.dtype, str) and config_lib.dtype_from(c) in (jnp.float32, jnp.bfloat16)
  c = config_lib.load_config(os.path.join(root, "train", "base.py"),
                             ["dtype=bfloat16", "init=scratch", "model=resnet:basic:1,1,1,1"])
  c.augment.resolution = 16
  model, _, _ = state_lib.build_model(c, 3)
  assert model.dtype == jnp.bfloat16
  c.dtype = "float64"
  with pytest.raises(ConfigError, match=r"^dtype='float64' is not one of float32, bfloat16; pass e\.g\."):
    state_lib.build_model(c, 3)
