"""One seed helper: every named stream is distinct, and no ad-hoc salts exist outside it."""
import ast
import pathlib

import numpy as np
import pytest

from synth_jax import streams

PACKAGE = pathlib.Path(streams.__file__).parent


def test_every_stream_has_its_own_id_and_state():
  ids = {streams.stream_id(n) for n in streams.STREAMS}
  assert len(ids) == len(streams.STREAMS)
  # The first words of each stream for the same (seed, ids) differ, with and without ids.
  for args in ((), (0,), (3,), (3, 0), (0, 3)):
    states = {tuple(streams.seed_sequence(0, n, *args).generate_state(4)) for n in streams.STREAMS}
    assert len(states) == len(streams.STREAMS), args


def test_id_tuples_of_different_length_do_not_collide():
  # SeedSequence pads short entropy with zeros: (c,) and (c, 0) would collide without the length.
  a = streams.seed_sequence(5, "few_shot", 3).generate_state(4)
  b = streams.seed_sequence(5, "few_shot", 3, 0).generate_state(4)
  assert not np.array_equal(a, b)
  # The collision the old code had: invert's image cap SeedSequence([seed, 3]) was class 3's
  # few-shot draw SeedSequence([seed, 3]).
  assert not np.array_equal(streams.seed_sequence(0, "invert_images").generate_state(4),
                            streams.seed_sequence(0, "few_shot", 3).generate_state(4))


def test_streams_are_deterministic_and_keys_are_threefry():
  import jax
  assert streams.int_seed(1, "image_noise", 2, 3) == streams.int_seed(1, "image_noise", 2, 3)
  assert streams.int_seed(1, "image_noise", 2, 3) != streams.int_seed(2, "image_noise", 2, 3)
  k = streams.key(0, "train_step", 1)
  assert jax.random.key_data(k).shape == (2,)
  np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(streams.key(0, "train_step", 1)))
  with pytest.raises(KeyError, match="not in synth_jax.streams.STREAMS"):
    streams.rng(0, "no_such_stream")
  with pytest.raises(ValueError, match=">= 0"):
    streams.rng(0, "few_shot", -1)


def _calls(tree, names):
  for node in ast.walk(tree):
    if isinstance(node, ast.Call):
      f = node.func
      name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
      if name in names:
        yield node


def test_no_seed_derivation_outside_the_stream_helper():
  """SeedSequence / fold_in of a config seed / seed arithmetic appear only in streams.py."""
  offenders = []
  for path in sorted(PACKAGE.rglob("*.py")):
    if path.name == "streams.py":
      continue
    tree = ast.parse(path.read_text())
    for call in _calls(tree, {"SeedSequence", "default_rng"}):
      offenders.append(f"{path.relative_to(PACKAGE)}:{call.lineno}")
    for node in ast.walk(tree):  # `seed + 1`, `seed * 1000`: a salt
      if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        names = [n.id if isinstance(n, ast.Name) else getattr(n, "attr", "")
                 for n in (node.left, node.right)]
        if any(n == "seed" for n in names):
          offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} (seed arithmetic)")
  assert not offenders, offenders


def test_design_md_lists_every_stream():
  text = (PACKAGE.parent / "DESIGN.md").read_text()
  missing = [name for name in streams.STREAMS if f"`{name}`" not in text]
  assert not missing, f"add these streams to DESIGN.md: {missing}"
