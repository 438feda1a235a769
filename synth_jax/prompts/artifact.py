"""prompts.json: read, write (atomically), and the per-class caches that make a rerun cheap.

  {"classes": [{"id", "name", "disambiguated", "prompt_name", "prompts": [{"text", "kind",
                "source"}], "disambiguation": {"candidates", "scores", "chosen", ...},
                "llm": {"descriptions": {"key", "items"}, "contexts": {"key", "items"}}}],
   "meta": {"version", "complete", "num_classes", "class_names", "strategies", "weights", "seed",
            "llm", "clip", ...}}

`disambiguated` is the CLIP-chosen name (null without disambiguation: readers fall back to
`name`); `prompt_name` is the name every prompt uses. Classes are written as they finish with
`meta.complete` false; a reader that needs every class checks `meta.complete`. The LLM answers
and CLIP scores are kept under a key of everything that produced them, so a rerun reuses them
when nothing relevant changed and asks again when something did.
"""
from __future__ import annotations

import hashlib
import json
import os

from synth_jax import files
from synth_jax.errors import DataError

FILENAME = "prompts.json"
VERSION = 1


def cache_key(*parts) -> str:
  """A short stable hash of the JSON of `parts` (what produced a cached answer)."""
  blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def read(path: str) -> dict:
  """A prompts.json artifact; DataError naming the file if it is not one."""
  try:
    with open(path) as f:
      data = json.load(f)
  except ValueError:
    raise DataError(f"{path} is not valid JSON (a crash cannot cause this: writes are atomic); "
                    "delete it and rerun `synth-jax prompts`") from None
  if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
    raise DataError(f"{path} is not a prompts.json artifact (needs a 'classes' list); "
                    "regenerate it with `synth-jax prompts`")
  return data


def read_cached(run_dir: str) -> dict[int, dict]:
  """{class id: entry} of a previous run in `run_dir` ({} if none)."""
  path = os.path.join(run_dir, FILENAME)
  if not os.path.exists(path):
    return {}
  return {int(c["id"]): c for c in read(path)["classes"]}


def cached_items(entry: dict | None, kind: str, key: str) -> list[str] | None:
  """The cached LLM list of `kind` if it was produced under `key`."""
  got = ((entry or {}).get("llm") or {}).get(kind) or {}
  return list(got["items"]) if got.get("key") == key and "items" in got else None


def cached_choice(entry: dict | None, key: str) -> dict | None:
  got = (entry or {}).get("disambiguation") or {}
  return dict(got) if got.get("key") == key else None


def write(run_dir: str, classes: list[dict], meta: dict) -> str:
  """Writes `run_dir/prompts.json` atomically (classes in id order) and returns its path."""
  path = os.path.join(run_dir, FILENAME)
  data = {"classes": sorted(classes, key=lambda c: int(c["id"])),
          "meta": {"version": VERSION, **meta}}
  files.write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
  return path


def class_entry(prompts_json: dict, name_or_id) -> dict:
  """One class's entry by id or name (for callers such as the generate job)."""
  for c in prompts_json["classes"]:
    if c["id"] == name_or_id or c["name"] == name_or_id:
      return c
  raise DataError(f"class {name_or_id!r} is not in prompts.json; rerun `synth-jax prompts` "
                  "with that class")
