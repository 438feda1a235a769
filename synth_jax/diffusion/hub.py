"""Hugging Face Hub model ids (`org/name`) -> a local diffusers folder, as diffusers resolves them.

`huggingface_hub.snapshot_download` with its own cache (`HF_HOME` / `HF_HUB_CACHE`) and offline
switch (`HF_HUB_OFFLINE`), read when called: a pipeline already in a user's cache loads without
the network, and a download lands where diffusers would look for it. Only the files a pipeline
needs are fetched (configs, tokenizers and the weights of the asked `variant`), not every variant
a repository holds.
"""
from __future__ import annotations

import os
import re

from synth_jax.errors import WeightsError

_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def is_hub_id(path: str) -> bool:
  """'org/name' that is not an existing local path."""
  return bool(_ID.match(path)) and not os.path.exists(os.path.expanduser(path))


def _patterns(variant: str | None) -> list[str]:
  tag = f".{variant}" if variant else ""
  out = ["model_index.json", "*/config.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*"]
  for comp in _COMPONENTS:
    for stem in ("diffusion_pytorch_model", "model"):
      out += [f"{comp}/{stem}{tag}.safetensors", f"{comp}/{stem}{tag}.safetensors.index.json",
              f"{comp}/{stem}{tag}-*.safetensors"]
  return out


def resolve(model_id: str, revision: str | None = None, variant: str | None = None) -> str:
  """The snapshot folder of `model_id` at `revision` (default 'main') in the hub cache."""
  import huggingface_hub
  from huggingface_hub import constants
  from huggingface_hub import errors as hub_errors
  offline = bool(constants.HF_HUB_OFFLINE)
  try:
    return huggingface_hub.snapshot_download(
        model_id, revision=revision, cache_dir=constants.HF_HUB_CACHE,
        local_files_only=offline, allow_patterns=_patterns(variant))
  except (hub_errors.LocalEntryNotFoundError, FileNotFoundError) as e:
    if not offline:
      raise WeightsError(f"model id {model_id!r} could not be downloaded ({type(e).__name__}); "
                         "check the id and the network, or pass a local diffusers folder") from None
    raise WeightsError(
        f"model id {model_id!r} (revision {revision or 'main'}) is not in the Hugging Face cache "
        f"{constants.HF_HUB_CACHE} and HF_HUB_OFFLINE is set; download it once online "
        f"(hf download {model_id}), point HF_HOME at the cache that has it, or pass a local "
        "folder") from None
  except hub_errors.HfHubHTTPError as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise WeightsError(f"model id {model_id!r}: the Hub answered {first}; check the id, revision "
                       "and access token (HF_TOKEN)") from None
