"""A rerun compiles nothing: the second run of a stage loads every program from the cache folder.

Each run is a fresh process (as after a preemption) running `synth-jax plan` through `cli.main`,
which sets the cache up from `--config.compile_cache`; JAX's monitoring events count cache misses
(programs compiled) and hits (programs loaded).
"""
import json
import os
import subprocess
import sys

import pytest

from synth_jax import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

RUN = """
import json, sys
from jax import monitoring
counts = {"miss": 0, "hit": 0}
def on_event(name, **kw):
  if name == "/jax/compilation_cache/cache_misses": counts["miss"] += 1
  if name == "/jax/compilation_cache/cache_hits": counts["hit"] += 1
monitoring.register_event_listener(on_event)
from synth_jax import cli
rc = cli.main(sys.argv[1:])
print("COUNTS", json.dumps(dict(counts, rc=rc)))
"""


def _run(cache):
  argv = ["plan", "--config", "configs/train/base.py:init=scratch,image_size=16,batch_size=2",
          "--config.model=resnet:basic:1,1,1,1", f"--config.compile_cache={cache}", "--chip=v5e"]
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-c", RUN, *argv], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  line = [ln for ln in out.stdout.splitlines() if ln.startswith("COUNTS ")]
  assert line, out.stdout[-2000:] + out.stderr[-2000:]
  return json.loads(line[-1][len("COUNTS "):])


@pytest.mark.slow  # two fresh processes that import jax and compile a train step: ~30-60 s
def test_rerun_compiles_nothing(tmp_path):
  cache = str(tmp_path / "xla")
  first = _run(cache)
  assert first["rc"] == 0 and first["miss"] > 0 and os.listdir(cache)
  second = _run(cache)
  print(f"first run: {first['miss']} compiled; rerun: {second['miss']} compiled, "
        f"{second['hit']} loaded from the cache")
  assert second["rc"] == 0 and second["miss"] == 0 and second["hit"] >= first["miss"]


def test_setup_sets_jax_config(tmp_path, monkeypatch):
  import jax
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compile_cache.default_dir() == str(tmp_path / "synth_jax" / "xla")
  assert compile_cache.setup("off") == ""
  old = jax.config.jax_compilation_cache_dir
  try:
    path = compile_cache.setup("")
    assert path == compile_cache.default_dir() and os.path.isdir(path)
    assert jax.config.jax_compilation_cache_dir == path
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
  finally:
    jax.config.update("jax_compilation_cache_dir", old)
