"""Package shape (issue 24): no module reaches into another's private names; imports go downward."""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "synth_jax")


def _modules():
  for d, _, names in os.walk(ROOT):
    for n in names:
      if n.endswith(".py"):
        path = os.path.join(d, n)
        yield os.path.relpath(path, os.path.dirname(ROOT)), ast.parse(open(path).read())


def test_no_private_name_is_used_across_modules():
  bad = []
  for rel, tree in _modules():
    ours = set()  # local names bound to synth_jax modules
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synth_jax"):
        for a in node.names:
          if a.name.startswith("_") and not a.name.startswith("__"):
            bad.append(f"{rel}: from {node.module} import {a.name}")
          ours.add(a.asname or a.name)
      elif isinstance(node, ast.Import):
        for a in node.names:
          if a.name.startswith("synth_jax"):
            ours.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in ours and node.attr.startswith("_")
          and not node.attr.startswith("__")):
        bad.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}")
  assert bad == [], bad


# The package's layers, bottom up (DESIGN.md: imports go downward only). Base modules may import
# each other; everything else only imports a lower layer.
LAYERS = [
    {"__init__", "errors", "faults", "files", "hosts", "streams", "checks", "config", "runs",
     "sharding", "planner", "checkpoint_integrity", "compile_cache"},
    {"data", "models"},
    {"prompts", "quality"},
    {"diffusion"},
    {"report_html"},
    {"train"},
    {"demo", "cli"},
]


def test_imports_go_downward_only():
  rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
  bad = []
  for rel, tree in _modules():
    parts = rel.split(os.sep)
    src = parts[1] if len(parts) > 2 else parts[1][:-3]
    assert src in rank, f"{rel}: add {src!r} to a layer in this test"
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synth_jax"):
        m = node.module.split(".")
        targets = [a.name for a in node.names] if len(m) == 1 else [m[1]]
      elif isinstance(node, ast.Import):
        targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("synth_jax.")]
      for t in targets:
        if t != src and (rank[t] > rank[src] or (rank[t] == rank[src] and rank[src] > 0)):
          bad.append(f"{rel}:{node.lineno}: {src} (layer {rank[src]}) imports {t} "
                     f"(layer {rank[t]})")
  assert bad == [], bad
