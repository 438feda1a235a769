"""DSI on SDXL: the style token in both text encoders, SDXL's added conditioning, its token file.

As diffusers' examples/textual_inversion/textual_inversion_sdxl.py: the token gets one new row in
each encoder's token table (CLIP ViT-L `text_encoder`, OpenCLIP bigG `text_encoder_2`), both rows
train, and the UNet sees both encoders' penultimate hidden states side by side plus the added
conditioning: the pooled projection of encoder 2 and the time ids (original size, crop top-left,
target size). Our images are resized/cropped to `resolution` before encoding, so the time ids are
(r, r, 0, 0, r, r) (diffusers passes each image's size before its resize). The export is
diffusers' SDXL layout `{"clip_l": (1, 768), "clip_g": (1, 1280)}`.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from synth_jax.diffusion import invert_data, textual_inversion

# (encoder, tokenizer attribute, key in diffusers' SDXL textual-inversion file)
ENCODERS = (("text_encoder", "tokenizer", "clip_l"), ("text_encoder_2", "tokenizer_2", "clip_g"))


def max_length(pipe, encoder: str) -> int:
  tokenizer = pipe.tokenizer if encoder == "text_encoder" else pipe.tokenizer_2
  return min(tokenizer.model_max_length, getattr(pipe, encoder).max_position_embeddings)


def prompt_ids(pipe, config, tokens: list[str]) -> np.ndarray:
  """(tokens, templates, L1 + L2): each encoder's token ids, side by side (split by `split_ids`)."""
  return np.concatenate([invert_data.prompt_ids(pipe, config, tokens, getattr(pipe, tok),
                                                max_length(pipe, enc))
                         for enc, tok, _ in ENCODERS], axis=-1)


def split_ids(pipe, ids):
  n = max_length(pipe, "text_encoder")
  return ids[..., :n], ids[..., n:]


def conditioning(pipe, frozen, emb: dict, token_ids: dict, ids, resolution: int):
  """(UNet context, {text_embeds, time_ids}) with the token rows of `emb` in both tables."""
  outs = []
  for (enc, _, _), part in zip(ENCODERS, split_ids(pipe, ids)):
    params = frozen[enc]
    table = params["embeddings"]["token_embedding"]["embedding"]
    table = table.at[token_ids[enc]].set(emb[enc].astype(table.dtype))
    outs.append(getattr(pipe, enc).apply({"params": params}, part, inputs_embeds=table[part]))
  context = jnp.concatenate([outs[0]["hidden_states"][-2], outs[1]["hidden_states"][-2]], -1)
  pooled = outs[1]["text_embeds"]
  r = float(resolution)
  size = jnp.asarray([r, r, 0, 0, r, r], jnp.float32)
  return context, {"text_embeds": pooled, "time_ids": jnp.broadcast_to(size, (pooled.shape[0], 6))}


def save(path: str, token, vectors: dict) -> None:
  """One token's rows {encoder: (dim,)} as diffusers' SDXL file (the token named in metadata);
  a list of tokens with rows (n, dim): the per-class record."""
  textual_inversion.save_sdxl_embeds(path, token, vectors["text_encoder"],
                                     vectors["text_encoder_2"])


def load(pipe, token: str, vectors: dict) -> list[str]:
  """Adds one learned token to both encoders of `pipe` (the preview's fresh pipeline)."""
  return textual_inversion.load_textual_inversion(
      pipe, {key: np.asarray(vectors[enc])[None] for enc, _, key in ENCODERS}, token=token)
