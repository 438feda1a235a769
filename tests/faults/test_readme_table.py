"""README's "What happens when..." table and the tests match one to one.

Every row names exactly one pytest node id; the id must exist (module-level test function, and for
`name[id]` a `pytest.mark.parametrize` case with that id), appear in one row only, and carry
"(slow)" exactly when the test is marked slow. At least 20 rows.
"""
import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTION = "## What happens when..."
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[(.+?)\])?`")  # ids may hold brackets


def table_rows():
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  assert SECTION in text, f"README.md has no '{SECTION}' section"
  body = text.split(SECTION, 1)[1]
  body = re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]
  lines = [line for line in body.splitlines() if line.startswith("|")]
  assert lines[1].replace(" ", "").startswith("|---|"), "table needs a header and a separator"
  return lines[2:]


def _id(value) -> str:
  # pytest escapes strings in ids the same way (backslashes doubled, non-ASCII as \\u....).
  return value.encode("unicode_escape").decode("ascii") if isinstance(value, str) else str(value)


def _param_ids(decorator) -> list[str]:
  """pytest's ids for a literal `pytest.mark.parametrize(names, values[, ids=...])`."""
  try:
    names = ast.literal_eval(decorator.args[0])
    values = ast.literal_eval(decorator.args[1])
  except ValueError:  # computed cases (e.g. one per config file): no README row can name them
    return []
  for kw in decorator.keywords:
    if kw.arg == "ids":
      return list(ast.literal_eval(kw.value))
  multi = isinstance(names, (list, tuple)) or "," in names
  return ["-".join(_id(v) for v in value) if multi else _id(value) for value in values]


def _tests_in(path) -> dict[str, tuple[list[str] | None, bool]]:
  """{function name: (param ids or None, marked slow)} for module-level test functions."""
  with open(os.path.join(REPO, path)) as f:
    tree = ast.parse(f.read())
  out = {}
  for node in tree.body:
    if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
      continue
    ids, slow = None, False
    for d in node.decorator_list:
      src = ast.unparse(d)
      if src == "pytest.mark.slow":
        slow = True
      elif src.startswith("pytest.mark.parametrize("):
        ids = (ids or []) + _param_ids(d)
    out[node.name] = (ids, slow)
  return out


def test_readme_table_names_one_existing_test_per_row():
  rows = table_rows()
  assert len(rows) >= 20, f"the table has {len(rows)} rows; the issue asks for at least 20"
  seen = set()
  for row in rows:
    cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
    assert len(cells) == 3 and all(cells), f"row needs 3 non-empty cells: {row}"
    nodes = NODE.findall(cells[2])
    assert len(nodes) == 1, f"row must name exactly one test: {row}"
    path, name, param = nodes[0]
    node_id = f"{path}::{name}" + (f"[{param}]" if param else "")
    assert node_id not in seen, f"{node_id} is named by two rows"
    seen.add(node_id)
    assert os.path.isfile(os.path.join(REPO, path)), f"{path} does not exist"
    tests = _tests_in(path)
    assert name in tests, f"{path} has no test function {name}"
    ids, slow = tests[name]
    if ids is not None:
      assert param, f"{node_id} is parametrized: name one case, e.g. [{ids[0]}]"
      assert param in ids, f"{node_id}: no case {param!r} (cases: {ids})"
    else:
      assert not param, f"{node_id}: {name} is not parametrized"
    assert slow == ("(slow)" in cells[2]), f"{node_id}: mark '(slow)' in the table iff the test is"


def test_param_ids_follow_pytest():
  tree = ast.parse('@pytest.mark.parametrize("a,b", [("x=1", "y z"), ("p", 2)])\ndef f(): pass')
  assert _param_ids(tree.body[0].decorator_list[0]) == ["x=1-y z", "p-2"]
  tree = ast.parse('@pytest.mark.parametrize("mode", ["L", "CMYK"])\ndef f(): pass')
  assert _param_ids(tree.body[0].decorator_list[0]) == ["L", "CMYK"]
  tree = ast.parse('@pytest.mark.parametrize("g,m", [("g=80", "outside \\\\[0, 50\\\\]")])\n'
                   'def f(): pass')
  assert _param_ids(tree.body[0].decorator_list[0]) == ["g=80-outside \\\\[0, 50\\\\]"]
