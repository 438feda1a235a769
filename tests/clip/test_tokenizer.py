"""CLIP tokenization with the real BPE vocabulary: ours vs open_clip's and transformers' ids."""
import numpy as np
import pytest

from synth_jax.models import clip as clip_lib
from tests.clip import helpers

EOT = 49407
TRICKY = [
    "a photo of a dog.", "Café, naïve façade — crème brûlée à la carte", "cafe\u0301 (combining accent)",
    "Straße ÆØÅ øre Ångström", "what's up? it'll be, they're, I'd, we've, I'M", "don't 's 'quoted'",
    "!!!???...,,,;;;", "🐶🐱 emoji 👍🏽 and 🇫🇷 flags", "1234567 3.14159 1,000,000 2nd 10x",
    "MiXeD CaSe WORDS", "  lots \t of \n whitespace  ", "日本語のテキスト 中文 한국어", "Ω≈ç√∫ µ≤≥÷",
    "<html> tags & symbols @#$%^*()_+=[]{}|\\/", "a" * 300, "",
    " ".join(f"word{i}" for i in range(120)),  # truncated to 77
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  from transformers import CLIPTokenizer
  return CLIPTokenizer.from_pretrained(helpers.tokenizer_dir(str(tmp_path_factory.mktemp("tok"))))


def _until_eot(row):
  row = list(row)
  return row[:row.index(EOT) + 1]


def test_ids_match_open_clip(tokenizer):
  import open_clip
  ours = clip_lib.tokenize(tokenizer, TRICKY, 77)
  ref = open_clip.tokenize(TRICKY).numpy()
  assert ours.shape == ref.shape == (len(TRICKY), 77)
  for text, a, b in zip(TRICKY, ours, ref):
    assert _until_eot(a) == _until_eot(b), text
  assert ours[-1, -1] == EOT and ours[-1, 0] == 49406  # truncated rows still end with <end>
  assert (ours[0, len(_until_eot(ours[0])):] == EOT).all()  # padded with the pad (=EOT) token


def test_ids_match_transformers_and_html_is_unescaped_like_open_clip(tokenizer):
  import open_clip
  ours = clip_lib.tokenize(tokenizer, TRICKY, 77)
  plain = np.asarray(tokenizer(TRICKY, padding="max_length", truncation=True, max_length=77)["input_ids"])
  np.testing.assert_array_equal(ours, plain)
  # OpenAI's tokenizer unescapes HTML, repairs mojibake, uncurls quotes (ftfy) before BPE; plain transformers does not.
  fixes = ["fish &amp; chips", "&lt;b&gt; caf&eacute;", "cafÃ© mojibake", "don’t ‘curly’ quotes"]
  a = clip_lib.tokenize(tokenizer, fixes, 77)
  b = open_clip.tokenize(fixes).numpy()
  for text, x, y in zip(fixes, a, b):
    assert _until_eot(x) == _until_eot(y), text
  raw = tokenizer(fixes[:1])["input_ids"][0]
  assert raw != _until_eot(a[0])
