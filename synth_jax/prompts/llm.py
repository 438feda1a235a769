"""LLM backends behind one call, `generate(prompt, *, seed) -> str`, and list answers from them.

  llm = make_backend(config.llm)      # kind: hf | http | json
  items = ask_list(llm, ListRequest("contexts", "tabby cat", prompt, n=8), retries=3)

Backends:
  hf    a local Hugging Face causal-LM folder through transformers (torch imported on first use),
        greedy (temperature 0) or sampled with `seed`;
  http  an OpenAI-compatible `/chat/completions` endpoint (urllib only), key from the env var
        named by `api_key_env`;
  json  a file the user wrote: {class: {"descriptions": [...], "contexts": [...],
        "styles": [...]}} (only the lists the run needs); it answers
        list requests directly (`lookup`) and is never asked free text.
Bad output (empty, unparsable, too few items) is retried up to `retries` times with a firmer
instruction and a new seed, then LLMError names the class.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import urllib.error
import urllib.request

from synth_jax import streams
from synth_jax.errors import ConfigError, LLMError


@dataclasses.dataclass(frozen=True)
class ListRequest:
  """One list the stage needs for one class."""
  kind: str          # "descriptions" (meanings) | "contexts" (scenes) | "styles" (SD)
  class_name: str    # the dataset's label, as the JSON backend keys it
  prompt: str        # the instruction sent to a text LLM
  n: int             # items wanted (extra ones are cut)
  min_items: int = 1  # fewer after parsing -> retry


class HFBackend:
  """A local causal LM folder (`save_pretrained` layout) run with transformers on the host."""

  def __init__(self, path: str, *, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, device: str = "cpu"):
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(os.path.join(path, "config.json")):
      raise ConfigError(f"llm.path={path!r} is not a Hugging Face model folder (no config.json); "
                        "pass a folder written by save_pretrained")
    self.path, self.max_new_tokens = path, int(max_new_tokens)
    self.temperature, self.top_p, self.device = float(temperature), float(top_p), device
    self._model = self._tokenizer = None

  @property
  def identity(self) -> str:
    return f"hf:{self.path}:t={self.temperature}:p={self.top_p}:n={self.max_new_tokens}"

  def _load(self):
    if self._model is None:
      import transformers  # heavy: only when this backend is used
      self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
      self._model = transformers.AutoModelForCausalLM.from_pretrained(self.path).to(self.device)
      self._model.eval()
    return self._model, self._tokenizer

  def generate(self, prompt: str, *, seed: int) -> str:
    import torch
    model, tok = self._load()
    if getattr(tok, "chat_template", None):  # instruction-tuned models expect their chat format
      ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                    add_generation_prompt=True, return_tensors="pt",
                                    return_dict=True)["input_ids"]
    else:
      ids = tok(prompt, return_tensors="pt")["input_ids"]
    ids = ids.to(self.device)
    sample = self.temperature > 0
    kw = dict(do_sample=sample, max_new_tokens=self.max_new_tokens,
              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    if sample:
      kw.update(temperature=self.temperature, top_p=self.top_p)
    else:  # the model's generation_config may ask for sampling; greedy means greedy
      kw.update(temperature=None, top_p=None, top_k=None)
    torch.manual_seed(int(seed) % (2**63))  # sampling draws from torch's global generator
    with torch.no_grad():
      out = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


class HTTPBackend:
  """An OpenAI-compatible chat-completions server (vLLM, llama.cpp, TGI, OpenAI, ...)."""

  def __init__(self, base_url: str, model: str, *, api_key_env: str = "", timeout: float = 60.0,
               temperature: float = 0.0, max_tokens: int = 512):
    if not base_url.startswith(("http://", "https://")):
      raise ConfigError(f"llm.base_url={base_url!r} is not an http(s) URL; e.g. "
                        "http://127.0.0.1:8000/v1")
    if not model:
      raise ConfigError("llm.model is empty; pass the served model's name, e.g. "
                        "--config.llm.model=llama-3-8b")
    self.key = ""
    if api_key_env:
      self.key = os.environ.get(api_key_env, "")
      if not self.key:
        raise ConfigError(f"llm.api_key_env={api_key_env!r} names an unset environment variable; "
                          f"export {api_key_env}=... or set --config.llm.api_key_env=''")
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.model, self.timeout = model, float(timeout)
    self.temperature, self.max_tokens = float(temperature), int(max_tokens)

  @property
  def identity(self) -> str:
    return f"http:{self.url}:{self.model}:t={self.temperature}:n={self.max_tokens}"

  def generate(self, prompt: str, *, seed: int) -> str:
    body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                       "temperature": self.temperature, "max_tokens": self.max_tokens,
                       "seed": int(seed) % (2**31)}).encode()
    headers = {"Content-Type": "application/json"}
    if self.key:
      headers["Authorization"] = f"Bearer {self.key}"
    req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
    try:
      with urllib.request.urlopen(req, timeout=self.timeout) as r:
        raw = r.read()
    except urllib.error.HTTPError as e:
      raise LLMError(f"LLM endpoint {self.url} answered HTTP {e.code} ({e.reason}); check "
                     "llm.model, the key in llm.api_key_env and the server log") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
      reason = getattr(e, "reason", e)
      raise LLMError(f"LLM endpoint {self.url} is unreachable ({reason}); start the server or "
                     "fix --config.llm.base_url") from None
    try:
      return json.loads(raw)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
      raise LLMError(f"LLM endpoint {self.url} did not return an OpenAI chat completion "
                     f"({raw[:80]!r}); point llm.base_url at an OpenAI-compatible /v1") from None


class JSONBackend:
  """Answers written by hand: {class: {"descriptions": [...], "contexts": [...]}}."""

  def __init__(self, path: str):
    path = os.path.abspath(os.path.expanduser(path))
    try:
      with open(path) as f:
        data = json.load(f)
    except FileNotFoundError:
      raise ConfigError(f"llm.path={path!r} does not exist; write the answers file "
                        '{class: {"descriptions": [...], "contexts": [...]}}') from None
    except ValueError as e:
      raise ConfigError(f"llm.path={path!r} is not valid JSON ({e}); fix the file") from None
    if not isinstance(data, dict):
      raise ConfigError(f"llm.path={path!r} must hold an object {{class: {{kind: [...]}}}}")
    self.path = path
    self.data = {_key(k): v for k, v in data.items()}

  @property
  def identity(self) -> str:
    return f"json:{self.path}"

  def lookup(self, kind: str, class_name: str) -> list[str]:
    entry = self.data.get(_key(class_name))
    if not isinstance(entry, dict) or kind not in entry:
      raise LLMError(f"class {class_name!r} has no {kind!r} list in {self.path}; add "
                     f'"{class_name}": {{"{kind}": [...]}}')
    items = entry[kind]
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
      raise LLMError(f"class {class_name!r}: {kind!r} in {self.path} must be a list of strings")
    return items

  def generate(self, prompt: str, *, seed: int) -> str:
    raise LLMError(f"the json LLM backend ({self.path}) answers only list requests; use an hf "
                   "or http backend for free text")


def _key(name: str) -> str:
  return " ".join(str(name).replace("_", " ").lower().split())


def make_backend(cfg):
  """An LLM backend from config.llm (kind, path, base_url, model, ...)."""
  kind = cfg.get("kind", "")
  if kind == "hf":
    return HFBackend(cfg.path, max_new_tokens=cfg.get("max_new_tokens", 256),
                     temperature=cfg.get("temperature", 0.0), top_p=cfg.get("top_p", 1.0))
  if kind == "http":
    return HTTPBackend(cfg.base_url, cfg.model, api_key_env=cfg.get("api_key_env", ""),
                       timeout=cfg.get("timeout", 60.0), temperature=cfg.get("temperature", 0.0),
                       max_tokens=cfg.get("max_new_tokens", 512))
  if kind == "json":
    return JSONBackend(cfg.path)
  raise ConfigError(f"llm.kind={kind!r} is unknown; use hf (local folder), http "
                    "(OpenAI-compatible server) or json (answers file)")


# ---- lists out of free text -----------------------------------------------------------------
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):]|\(?[a-zA-Z][.)])\s+")


def parse_list(text: str) -> list[str]:
  """Items from an LLM answer: a JSON list anywhere in it, else one item per (bulleted) line."""
  text = (text or "").strip()
  start, end = text.find("["), text.rfind("]")
  if 0 <= start < end:
    try:
      items = json.loads(text[start:end + 1])
      if isinstance(items, list) and all(isinstance(x, str) for x in items):
        return _clean(items)
    except ValueError:
      pass
  lines = [ln for ln in text.splitlines() if ln.strip()]
  bulleted = [ln for ln in lines if _BULLET.match(ln)]
  # Prose around a list ("Sure! Here are ...:") is dropped when the list itself is bulleted.
  return _clean([_BULLET.sub("", ln) for ln in (bulleted if len(bulleted) >= 2 else lines)])


def _clean(items) -> list[str]:
  out = []
  for x in items:
    x = " ".join(str(x).split()).strip().strip("\"'`").strip()
    # One phrase per item: long runs are prose or degenerate generations, not list items.
    if 2 <= len(x) <= 200 and any(c.isalpha() for c in x) and x.lower() not in map(str.lower, out):
      out.append(x)
  return out


def ask_list(llm, req: ListRequest, *, seed: int, retries: int = 3) -> tuple[list[str], int]:
  """(items, calls made): the backend's list for `req`, retried on bad output, else LLMError."""
  if hasattr(llm, "lookup"):
    items = _clean(llm.lookup(req.kind, req.class_name))
    if len(items) < req.min_items:
      raise LLMError(f"class {req.class_name!r}: {len(items)} usable {req.kind} in the answers "
                     f"file, need >= {req.min_items}; add more")
    return items[:req.n], 0
  prompt, got = req.prompt, []
  for attempt in range(retries + 1):
    # retries draw their own seeds: a sampling model may answer a resent prompt differently
    attempt_seed = seed if attempt == 0 else streams.int_seed(seed, "llm_retry", attempt)
    got = parse_list(llm.generate(prompt, seed=attempt_seed))
    if len(got) >= req.min_items:
      return got[:req.n], attempt + 1
    # A firmer instruction changes the input, so a greedy model can answer differently.
    prompt = (f"{req.prompt}\nAnswer ONLY with a JSON list of {req.n} short strings, "
              'e.g. ["...", "..."].')
  raise LLMError(f"class {req.class_name!r}: the LLM gave {len(got)} usable {req.kind} after "
                 f"{retries + 1} tries (need >= {req.min_items}); use a stronger model, raise "
                 "llm.retries, or write them in a json answers file")
