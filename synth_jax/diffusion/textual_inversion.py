"""Textual-inversion embeddings in diffusers' file layout (learned_embeds.safetensors).

Mirrors `StableDiffusionPipeline.load_textual_inversion`: a file holds `{token: (dim,) or (n, dim)}`
(diffusers), `{"emb_params": (n, dim)}` (A1111 safetensors) or `{"string_to_param": {"*": ...},
"name": ...}` (A1111 .pt). Each vector becomes a new tokenizer token (`tok`, `tok_1`, ... for
multi-vector embeddings, as diffusers names them) and a new row of the text encoder's token table.
Prompts using a multi-vector token go through `maybe_convert_prompt` first, as in diffusers.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from synth_jax.errors import WeightsError
from synth_jax.models import clip_text
from synth_jax.models import weights

FILE_NAME = "learned_embeds.safetensors"
TOKEN_KEY = "token"  # safetensors metadata key: the token an SDXL (clip_l/clip_g) file is for


def _read_file(path: str) -> dict[str, Any]:
  if os.path.isdir(path):
    for name in (FILE_NAME, "learned_embeds.bin"):
      if os.path.isfile(os.path.join(path, name)):
        return _read_file(os.path.join(path, name))
    raise WeightsError(f"no {FILE_NAME} (or learned_embeds.bin) in {path}; pass the file itself")
  if path.endswith((".pt", ".bin", ".pth")):
    obj = weights.read_torch(path, nested=True)
    if isinstance(obj, dict) and "string_to_param" in obj:  # A1111 .pt
      return {str(obj.get("name", "*")): np.asarray(obj["string_to_param"]["*"])}
    return obj
  return weights.read_tensors(path)


def read_embeddings(path_or_dict, token: str | None = None) -> tuple[list[str], list[np.ndarray]]:
  """(tokens, vectors) with multi-vector embeddings expanded to `tok, tok_1, ...`."""
  state = (dict(path_or_dict) if isinstance(path_or_dict, Mapping)
           else _read_file(os.fspath(path_or_dict)))
  state = {k: v for k, v in state.items() if hasattr(v, "shape")}
  if len(state) != 1:
    raise WeightsError(f"textual inversion {_describe(path_or_dict)} holds {len(state)} tensors "
                       f"({', '.join(sorted(state))[:200]}); expected one (a token and its vectors)")
  loaded_token, emb = next(iter(state.items()))
  if token is None and loaded_token in ("emb_params", "*"):
    raise WeightsError(f"textual inversion {_describe(path_or_dict)} does not name its token; "
                       "pass token='<name>'")
  token = token or loaded_token
  emb = np.asarray(emb, np.float32)
  if emb.ndim == 1:
    emb = emb[None]
  if emb.ndim != 2:
    raise WeightsError(f"textual inversion {token!r} has shape {emb.shape}; expected (dim,) or "
                       "(n_vectors, dim)")
  tokens = [token] + [f"{token}_{i}" for i in range(1, emb.shape[0])]
  return tokens, list(emb)


def _describe(path_or_dict) -> str:
  return "dict" if isinstance(path_or_dict, Mapping) else repr(os.fspath(path_or_dict))


def add_tokens(tokenizer, text_encoder_params: dict, tokens: list[str],
               vectors: list[np.ndarray]) -> dict:
  """Adds `tokens` to `tokenizer` (in place) and returns params with their rows appended.

  Like diffusers, the table is resized to len(tokenizer) + len(tokens) and token i gets id
  len(tokenizer) + i, so ids stay in step with the tokenizer.
  """
  table = np.asarray(
      weights.flatten(text_encoder_params)[clip_text.TOKEN_EMBEDDING])
  vocab = tokenizer.get_vocab()
  for t in tokens:
    if t in vocab:
      raise WeightsError(f"token {t!r} is already in the tokenizer; pass a different token=")
  dim = table.shape[1]
  for t, v in zip(tokens, vectors):
    if v.shape != (dim,):
      raise WeightsError(f"textual inversion vector for {t!r} has shape {v.shape}; this text "
                         f"encoder needs ({dim},): it was trained for another model")
  base = len(tokenizer)
  if table.shape[0] < base:  # rows the tokenizer knows but the table lacks: mean, like HF resize
    table = np.concatenate([table, np.repeat(table.mean(0, keepdims=True),
                                             base - table.shape[0], 0)])
  new_table = np.concatenate([table[:base], np.stack(vectors).astype(table.dtype)])
  tokenizer.add_tokens(list(tokens))
  ids = tokenizer.convert_tokens_to_ids(list(tokens))
  if list(ids) != list(range(base, base + len(tokens))):
    raise WeightsError(f"tokenizer gave ids {ids} to {tokens}; expected {base}.. (is it a "
                       "CLIPTokenizer with added tokens removed?)")
  flat = dict(weights.flatten(text_encoder_params))
  flat[clip_text.TOKEN_EMBEDDING] = new_table
  return weights.unflatten(flat)


def _install(pipe, encoder: str, tokenizer, tokens: list[str], vectors: list[np.ndarray]) -> None:
  params = add_tokens(tokenizer, pipe.params[encoder], tokens, vectors)
  rows = params["embeddings"]["token_embedding"]["embedding"].shape[0]
  pipe.params[encoder] = params
  setattr(pipe, encoder, getattr(pipe, encoder).clone(vocab_size=rows))
  pipe.configs[encoder] = {**pipe.configs[encoder], "vocab_size": rows}


def load_textual_inversion(pipe, path_or_dict, token: str | None = None) -> list[str]:
  """Loads an embedding into a `loading.StableDiffusion` (in place); returns the new tokens.

  SDXL's format `{"clip_l": (n, 768), "clip_g": (n, 1280)}` (no token name: pass `token`) adds
  the token to both tokenizers and both encoders, as diffusers' two `load_textual_inversion`
  calls (text_encoder / text_encoder_2) do.
  """
  state = (dict(path_or_dict) if isinstance(path_or_dict, Mapping)
           else _read_file(os.fspath(path_or_dict)))
  if {"clip_l", "clip_g"} <= set(state):
    token = token or _named_token(path_or_dict)
    if not getattr(pipe, "is_xl", False):
      raise WeightsError(f"textual inversion {_describe(path_or_dict)} is SDXL's (clip_l/clip_g); "
                         "this pipeline has one text encoder: use an SD 1.x/2.x embedding")
    if token is None:
      raise WeightsError(f"SDXL textual inversion {_describe(path_or_dict)} does not name its "
                         "token; pass token='<name>'")
    tokens = []
    for key, encoder, tokenizer in (("clip_l", "text_encoder", pipe.tokenizer),
                                    ("clip_g", "text_encoder_2", pipe.tokenizer_2)):
      tokens, vectors = read_embeddings({token: state[key]}, token)
      _install(pipe, encoder, tokenizer, tokens, vectors)
    return tokens
  tokens, vectors = read_embeddings(path_or_dict, token)  # errors name the file
  _install(pipe, "text_encoder", pipe.tokenizer, tokens, vectors)
  return tokens


def _named_token(path_or_dict) -> str | None:
  """The token our SDXL export names in its safetensors metadata (diffusers ignores it)."""
  if isinstance(path_or_dict, Mapping):
    return None
  path = os.fspath(path_or_dict)
  if os.path.isdir(path):
    path = os.path.join(path, FILE_NAME)
  if not path.endswith(".safetensors"):
    return None
  return weights.safetensors_metadata(path).get(TOKEN_KEY) or None


def token_names(path: str) -> list[str]:
  """The tokens loading `path` adds (SDXL files: the token named in their metadata)."""
  state = _read_file(os.fspath(path))
  if {"clip_l", "clip_g"} <= set(state):
    token = _named_token(path)
    if token is None:
      raise WeightsError(f"SDXL textual inversion {path!r} does not name its token; re-export "
                         "it with `synth-jax invert` or load it with token='<name>'")
    return read_embeddings({token: state["clip_l"]}, token)[0]
  return read_embeddings(path)[0]


def maybe_convert_prompt(prompt: str | list[str], tokenizer) -> str | list[str]:
  """Expands a multi-vector token `tok` to `tok tok_1 ...` in prompts, as diffusers does."""
  if isinstance(prompt, list):
    return [maybe_convert_prompt(p, tokenizer) for p in prompt]
  added = tokenizer.get_added_vocab()
  for t in set(tokenizer.tokenize(prompt)):
    if t in added:
      replacement, i = t, 1
      while f"{t}_{i}" in added:
        replacement += f" {t}_{i}"
        i += 1
      prompt = prompt.replace(t, replacement)
  return prompt


def save_learned_embeds(path: str, embeds: Mapping[str, np.ndarray]) -> None:
  """Writes `{token: (dim,) or (n, dim)}` as diffusers' learned_embeds.safetensors (atomically).

  diffusers' loader takes one token per file, so pass a single token to stay loadable there. A
  directory path gets `learned_embeds.safetensors` inside it.
  """
  if not embeds:
    raise WeightsError("save_learned_embeds got no embeddings; pass {token: vector}")
  if os.path.isdir(path) or not os.path.splitext(path)[1]:
    path = os.path.join(path, FILE_NAME)
  tensors = {t: np.ascontiguousarray(np.asarray(v, np.float32)) for t, v in embeds.items()}
  weights.write_safetensors(path, tensors, {"format": "pt"})


def save_sdxl_embeds(path: str, token: str | list[str], clip_l: np.ndarray,
                     clip_g: np.ndarray) -> None:
  """Writes diffusers' SDXL layout `{"clip_l": (n, 768), "clip_g": (n, 1280)}` (atomically).

  diffusers loads it with two `load_textual_inversion(state[key], token=..., text_encoder=...,
  tokenizer=...)` calls; the token's name rides in the metadata so `generate` needs no token=.
  """
  tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32).reshape(-1, np.shape(v)[-1]))
             for k, v in (("clip_l", clip_l), ("clip_g", clip_g))}
  if os.path.isdir(path) or not os.path.splitext(path)[1]:
    path = os.path.join(path, FILE_NAME)
  # a list of tokens (a per-class record, one row each) is not loadable as one token: named
  # under another key
  name = {TOKEN_KEY: token} if isinstance(token, str) else {"tokens": ",".join(token)}
  weights.write_safetensors(path, tensors, {"format": "pt", **name})
