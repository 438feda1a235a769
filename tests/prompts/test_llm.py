"""LLM backends: OpenAI-compatible HTTP against a stub server on 127.0.0.1, a tiny random HF causal
LM saved with save_pretrained, the JSON answers file, and retries on bad output."""
import http.server
import json
import os
import socket
import threading

import pytest

from synth_jax import config as config_lib
from synth_jax import streams
from synth_jax.errors import ConfigError, LLMError
from synth_jax.prompts import llm


class _Stub(http.server.BaseHTTPRequestHandler):
  replies: list = []   # (status, body) served in order, the last one repeated
  seen: list = []

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    _Stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
    status, reply = _Stub.replies[min(len(_Stub.seen), len(_Stub.replies)) - 1]
    data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):  # keep pytest output clean
    pass


@pytest.fixture
def stub():
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
  _Stub.replies, _Stub.seen = [], []
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}/v1"
  server.shutdown()
  server.server_close()


def _chat(text):
  return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def test_http_backend_against_stub_server(stub, monkeypatch):
  monkeypatch.setenv("MY_LLM_KEY", "sk-test")
  backend = llm.make_backend(config_lib.ConfigDict(dict(
      kind="http", base_url=stub, model="tiny-chat", api_key_env="MY_LLM_KEY", timeout=5.0,
      temperature=0.0, max_new_tokens=64)))
  # First answer is prose without a list, the retry gets a JSON list.
  _Stub.replies = [(200, _chat("I cannot help with that.")),
                   (200, _chat('Sure: ["on a runway", "above clouds", "in a hangar"]'))]
  req = llm.ListRequest("contexts", "boeing_747", "Write scenes for a boeing 747.", n=2, min_items=2)
  items, calls = llm.ask_list(backend, req, seed=11, retries=2)
  assert items == ["on a runway", "above clouds"] and calls == 2
  first, second = _Stub.seen
  assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
  assert first["body"]["model"] == "tiny-chat" and first["body"]["seed"] == 11
  assert first["body"]["messages"] == [{"role": "user", "content": "Write scenes for a boeing 747."}]
  # a retry draws its own seed from the request's (synth_jax.streams "llm_retry")
  assert second["body"]["seed"] == streams.int_seed(11, "llm_retry", 1)
  assert "JSON list" in second["body"]["messages"][0]["content"]

  _Stub.replies = [(500, {"error": "boom"})]
  with pytest.raises(LLMError, match=r"answered HTTP 500"):
    backend.generate("x", seed=0)
  _Stub.replies = [(200, "<html>not json</html>")]
  with pytest.raises(LLMError, match="did not return an OpenAI chat completion"):
    backend.generate("x", seed=0)
  monkeypatch.delenv("MY_LLM_KEY")
  with pytest.raises(ConfigError, match="'MY_LLM_KEY' names an unset environment variable"):
    llm.HTTPBackend(stub, "tiny-chat", api_key_env="MY_LLM_KEY")


def test_http_backend_unreachable_is_one_line():
  with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  backend = llm.HTTPBackend(f"http://127.0.0.1:{port}/v1", "m", timeout=2.0)
  with pytest.raises(LLMError) as e:
    backend.generate("hello", seed=0)
  msg = str(e.value)
  assert "\n" not in msg and f"127.0.0.1:{port}/v1/chat/completions is unreachable" in msg
  assert "--config.llm.base_url" in msg


def test_json_backend(tmp_path):
  path = tmp_path / "answers.json"
  path.write_text(json.dumps({"Tabby Cat": {"contexts": ["on a sofa", " on a sofa ", "in a box"]}}))
  backend = llm.JSONBackend(str(path))
  req = llm.ListRequest("contexts", "tabby_cat", "", n=5, min_items=2)
  assert llm.ask_list(backend, req, seed=0) == (["on a sofa", "in a box"], 0)
  with pytest.raises(LLMError, match=r"class 'dog' has no 'contexts' list"):
    llm.ask_list(backend, llm.ListRequest("contexts", "dog", "", n=5), seed=0)
  with pytest.raises(LLMError, match=r"class 'tabby_cat': 2 usable contexts .* need >= 3"):
    llm.ask_list(backend, llm.ListRequest("contexts", "tabby_cat", "", n=5, min_items=3), seed=0)
  path.write_text("{oops")
  with pytest.raises(ConfigError, match="is not valid JSON"):
    llm.JSONBackend(str(path))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
  """A random 2-layer GPT-2 and a byte-level BPE tokenizer, built offline, saved by transformers."""
  import torch
  import transformers
  from synth_jax.models.clip_openclip import bytes_to_unicode
  folder = str(tmp_path_factory.mktemp("tiny_gpt2"))
  vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
  vocab["<|endoftext|>"] = len(vocab)
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump(vocab, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")
  tok = transformers.GPT2Tokenizer(os.path.join(folder, "vocab.json"),
                                   os.path.join(folder, "merges.txt"))
  tok.save_pretrained(folder)
  torch.manual_seed(0)
  cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=2,
                                n_head=2, bos_token_id=256, eos_token_id=256)
  transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
  return folder


def test_hf_backend_matches_transformers_generate(tiny_lm):
  import torch
  import transformers
  prompt = "List three scenes for a tabby cat."
  greedy = llm.HFBackend(tiny_lm, max_new_tokens=16)
  out = greedy.generate(prompt, seed=0)
  # Reference: the same folder through transformers directly, greedy.
  tok = transformers.AutoTokenizer.from_pretrained(tiny_lm)
  model = transformers.AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
  ids = tok(prompt, return_tensors="pt")["input_ids"]
  with torch.no_grad():
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=16, pad_token_id=tok.eos_token_id)
  assert out == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
  assert greedy.generate(prompt, seed=123) == out  # greedy ignores the seed

  sampled = llm.make_backend(config_lib.ConfigDict(dict(
      kind="hf", path=tiny_lm, temperature=1.0, top_p=1.0, max_new_tokens=16)))
  a, b, c = (sampled.generate(prompt, seed=s) for s in (3, 3, 4))
  assert a == b and a != c


def test_random_lm_output_is_retried_then_names_the_class(tiny_lm):
  class Counting(llm.HFBackend):
    calls = 0

    def generate(self, prompt, *, seed):
      Counting.calls += 1
      return super().generate(prompt, seed=seed)
  backend = Counting(tiny_lm, max_new_tokens=12)
  req = llm.ListRequest("descriptions", "crane", "What can 'crane' mean?", n=4, min_items=4)
  with pytest.raises(LLMError, match=r"class 'crane': the LLM gave \d+ usable descriptions after "
                     r"3 tries \(need >= 4\)"):
    llm.ask_list(backend, req, seed=0, retries=2)
  assert Counting.calls == 3


def test_hf_backend_bad_folder(tmp_path):
  with pytest.raises(ConfigError, match="is not a Hugging Face model folder"):
    llm.HFBackend(str(tmp_path))
