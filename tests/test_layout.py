"""The import drawing: dit_jax's modules import each other without circles, the study wing
sits above the training library (never below it), and scripts stay thin."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "dit_jax")
STUDY = "dit_jax.study"
SCRIPT_LINES = 80  # a thin absl entry point parses flags and calls the library


def _module(path, root):
  rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path, root=ROOT):
  """The dit_jax modules a file imports (lazy imports inside functions too)."""
  deps = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dit_jax"):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        is_module = any(os.path.exists(os.path.join(root, *full.split(".")) + ext)
                        for ext in (".py", os.sep + "__init__.py"))
        deps.add(full if is_module else node.module)
    elif isinstance(node, ast.Import):
      deps.update(a.name for a in node.names if a.name.startswith("dit_jax"))
  return deps


def import_graph(pkg=PKG, root=ROOT):
  """{module: the dit_jax modules it imports} for every module under `pkg`."""
  graph = {}
  for dirpath, _, files in os.walk(pkg):
    for f in sorted(files):
      if f.endswith(".py"):
        name = _module(os.path.join(dirpath, f), root)
        graph[name] = {d for d in _imports(os.path.join(dirpath, f), root)
                       if d not in (name, "dit_jax")}
  return graph


def circle(graph):
  """One import circle as a list of modules (first == last), or None."""
  state = {}

  def visit(node, trail):
    if state.get(node) == "done":
      return None
    if state.get(node) == "open":
      return trail[trail.index(node):] + [node]
    state[node] = "open"
    for dep in sorted(graph.get(node, ())):
      found = visit(dep, trail + [node])
      if found:
        return found
    state[node] = "done"
    return None

  for node in sorted(graph):
    found = visit(node, [])
    if found:
      return found
  return None


def upward(graph):
  """(library module, study module) for every import of the study wing from below it."""
  return sorted((m, d) for m, deps in graph.items() for d in deps
                if not (m + ".").startswith(STUDY + ".") and (d + ".").startswith(STUDY + "."))


def test_no_module_imports_in_a_circle():
  assert circle(import_graph()) is None


def test_the_library_never_imports_the_study_wing():
  graph = import_graph()
  assert any(m.startswith(STUDY + ".") for m in graph)  # the wing exists and is scanned
  assert upward(graph) == []


def test_the_checks_catch_a_circle_and_an_upward_import():
  graph = {"dit_jax.a": {"dit_jax.b"}, "dit_jax.b": {"dit_jax.a"}, "dit_jax.c": set()}
  assert circle(graph) == ["dit_jax.a", "dit_jax.b", "dit_jax.a"]
  assert circle({"dit_jax.a": {"dit_jax.b"}, "dit_jax.b": set()}) is None
  graph = {"dit_jax.train": {"dit_jax.study.sweep"}, "dit_jax.study.sweep": {"dit_jax.train"}}
  assert upward(graph) == [("dit_jax.train", "dit_jax.study.sweep")]


def test_lazy_and_package_imports_are_seen(tmp_path):
  pkg = tmp_path / "dit_jax"
  (pkg / "study").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "study" / "__init__.py").write_text("")
  (pkg / "study" / "doc.py").write_text("")
  (pkg / "train.py").write_text("def f():\n  from dit_jax.study import doc\n")
  graph = import_graph(str(pkg), str(tmp_path))
  assert upward(graph) == [("dit_jax.train", "dit_jax.study.doc")]


def test_the_library_imports_nothing_that_sits_on_it():
  """dit_jax never imports the scripts, benches, tests or experiment configs built on it
  (it reads a config file by path, through configlib)."""
  above = ("bench", "scripts", "tests", "configs")
  found = []
  for dirpath, _, files in os.walk(PKG):
    for f in files:
      if f.endswith(".py"):
        tree = ast.parse(open(os.path.join(dirpath, f), encoding="utf-8").read())
        for node in ast.walk(tree):
          names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                   [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
          found += [(f, n) for n in names if n.split(".")[0] in above]
  assert found == []


def test_no_module_is_named_results():
  names = {m.rsplit(".", 1)[-1] for m in import_graph()}
  names |= {d for _, dirs, _ in os.walk(PKG) for d in dirs}
  assert "results" not in names


def test_scripts_are_thin():
  scripts = os.path.join(ROOT, "scripts")
  lengths = {f: sum(1 for _ in open(os.path.join(scripts, f), encoding="utf-8"))
             for f in os.listdir(scripts) if f.endswith(".py")}
  assert lengths and {f: n for f, n in lengths.items() if n >= SCRIPT_LINES} == {}
