"""A learned token must be used, and a `<...>` token in a prompt must be known, before sampling.

  check_prompt_tokens(prompts, tokenizer, loaded=["<dataset-style>"])   # or a one-line ConfigError

Why (issue 17, point 5): a prompt with `<dsi>` while inversion learned `<dataset-style>` is split
by CLIP's BPE into "<", "d", "si", ">" sub-words and Stable Diffusion samples plain class images:
the run finishes and the "DSI" cells mean nothing. The two failure modes, each caught here:
  * a `<...>` word in a prompt that is not a token of the tokenizer (the learned file not loaded,
    or loaded under another name);
  * a loaded token that no prompt uses (prompts written with another token name).
Multi-vector tokens (`tok`, `tok_1`, ...) count as their first name.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from synth_jax.errors import ConfigError

# A placeholder word such as <dataset-style>; CLIP's own <|startoftext|> / <|endoftext|> are not.
_TOKEN = re.compile(r"<[^<>|\s]+>")


def prompt_tokens(prompts: Iterable[str]) -> set[str]:
  """Every `<...>` placeholder word in the prompts."""
  return {t for p in prompts for t in _TOKEN.findall(p)}


def check_prompt_tokens(prompts: Sequence[str], tokenizer, loaded: Sequence[str] = ()) -> None:
  """Raises ConfigError (one line) on an unknown placeholder or a loaded token no prompt uses."""
  used = prompt_tokens(prompts)
  vocab = tokenizer.get_vocab()
  unknown = sorted(t for t in used if t not in vocab)
  if unknown:
    example = next(p for p in prompts if unknown[0] in p)
    have = sorted(t for t in loaded if not re.search(r"_\d+$", t))
    raise ConfigError(f"prompt {example!r} uses {unknown[0]!r}, which the tokenizer does not know "
                      f"(loaded tokens: {have or 'none'}); pass --config.style_token_path= the "
                      "learned_embeds file of that token, or write the prompts with the loaded one")
  firsts = [t for t in loaded if not (re.search(r"_\d+$", t) and re.sub(r"_\d+$", "", t) in loaded)]
  unused = sorted(t for t in firsts if t not in used)
  if unused:
    raise ConfigError(f"style token {unused[0]!r} was loaded but no prompt uses it (prompt "
                      f"tokens: {sorted(used) or 'none'}); write the DSI prompts with "
                      f"--config.dsi.token='{unused[0]}' in `synth-jax prompts`, or drop style_token_path")


def loaded_tokens(style_token_path: str) -> list[str]:
  """The token names a style_token_path (file or folder of learned_embeds) will add."""
  import os
  from synth_jax.diffusion import textual_inversion
  if not style_token_path:
    return []
  path = os.path.expanduser(style_token_path)
  files = ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
           if os.path.isdir(path) else [path])
  out = []
  for f in files:
    out += textual_inversion.token_names(f)
  return out
