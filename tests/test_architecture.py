"""The package's import graph: layers import downward only, no circles, nothing imports ``commands``.

Every ``import`` in ``unlearn_jax/`` counts, at module level and inside functions
(found with ``ast``, nothing is imported). The rules (``docs/architecture.md``):

* no circle of modules (``a`` imports ``b`` ... imports ``a``);
* every top-level module or package has a rank in :data:`RANKS`, and may import
  another one only of a strictly lower rank (a new top-level module fails until it
  is placed);
* only ``cli.py`` imports ``commands``;
* no module imports another module's private (``_name``) symbols, nor reads them
  as ``module._name``; a private submodule is open to the package that holds it
  (``unlearning/_x.py`` to ``unlearning``; the root's ``_validate.py`` to everyone).

The checker is a plain function, tested here on small packages built to break each rule.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import textwrap
from typing import Iterable, Mapping, Optional

import pytest

PACKAGE = "unlearn_jax"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)

# Rank of every top-level module or package of unlearn_jax: a unit may import only units of
# a strictly lower rank. Units of equal rank are peers that do not import each other.
RANKS: dict[str, int] = {
    # base: argument checks, shared types, loading a user's factory by spec, bounded file reads and safe writes
    "_validate": 0, "types": 0, "loading": 0, "files": 0, "distributed": 0,
    # the parts: data, models, training (import nothing above the base); configs, the compile cache
    "data": 1, "models": 1, "training": 1, "configs": 1, "compile_cache": 1,
    # the seed axis (mechanism); the cache store; checkpoint formats of other frameworks
    "seeds": 2, "checkpoint": 2, "interop": 2,
    # choosing how the seed axis runs (measured tables, measurement)
    "tuning": 3,
    # the methods and their public toolkit
    "unlearning": 4,
    # the metric kernel, user plugins
    "metrics": 5, "plugins": 5,
    # the results record, io, report, progress, setups, populations, stored ceilings
    "results": 6,
    # evaluations computed from populations: U-LiRA, KLOM, bootstrap, no-op check, stability
    "analysis": 7,
    # the protocol: config, context, stage runner, stages, scoring, the run
    "protocol": 8,
    # the public entry points
    "api": 9, "sweep": 9,
    # the command line: commands parse, call the library and print; cli dispatches
    "commands": 10,
    "cli": 11,
    "__init__": 11,  # the package facade (unlearn_jax.evaluate, ...)
}

# Edges that break a rule today and are being removed; each must still exist (a removed one
# must be deleted here, so this list cannot go stale).
PENDING: set[tuple[str, str]] = set()  # edges that break a rule and are being removed (none)


@dataclasses.dataclass(frozen=True)
class Edge:
  """``source`` imports ``target`` (a module, or ``module._name`` for a private name) at ``line``."""

  source: str
  target: str
  line: int


def modules_of(root: str, package: str) -> dict[str, str]:
  """Dotted module name -> file, for every ``.py`` file under ``root`` (the package folder)."""
  found = {}
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in sorted(files):
      if not name.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
      if rel[-1] == "__init__":
        rel = rel[:-1]
      found[".".join([package, *rel])] = os.path.join(folder, name)
  return found


def _absolute(module: str, is_package: bool, level: int, target: Optional[str]) -> str:
  if not level:
    return target or ""
  parts = module.split(".") if is_package else module.split(".")[:-1]
  parts = parts[:len(parts) - level + 1]
  return ".".join(parts + ([target] if target else []))


def import_edges(root: str, package: str) -> list[Edge]:
  """Every import of a module of ``package`` by one of its modules, at any depth of the file."""
  modules = modules_of(root, package)
  edges = []
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    module_aliases: dict[str, str] = {}  # local name -> module it is bound to
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name.split(".")[0] == package:
            edges.append(Edge(module, alias.name, node.lineno))
            module_aliases[alias.asname or alias.name] = alias.name
      elif isinstance(node, ast.ImportFrom):
        base = _absolute(module, is_package, node.level, node.module)
        if base.split(".")[0] != package:
          continue
        for alias in node.names:
          full = f"{base}.{alias.name}"
          if full in modules:  # a submodule
            edges.append(Edge(module, full, node.lineno))
            module_aliases[alias.asname or alias.name] = full
          else:
            edges.append(Edge(module, full if alias.name.startswith("_") else base, node.lineno))
    for node in ast.walk(tree):  # module._private read from an imported module
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in module_aliases and node.attr.startswith("_")
          and not (node.attr.startswith("__") and node.attr.endswith("__"))):
        edges.append(Edge(module, f"{module_aliases[node.value.id]}.{node.attr}", node.lineno))
  return edges


def private_owner(target: str) -> Optional[str]:
  """The module or package that holds the first private part of ``target`` (``None``: all public)."""
  parts = target.split(".")
  for i, part in enumerate(parts[1:], start=1):
    if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
      return ".".join(parts[:i])
  return None


def unit_of(module: str, package: str) -> str:
  """The top-level module or package ``module`` belongs to (``__init__`` for the package itself)."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
  """One circle per strongly connected component of more than one module (or a self-import)."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = [0]

  def visit(v):  # Tarjan's algorithm, iterative over the successors of each node
    work = [(v, iter(sorted(graph.get(v, ()))))]
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    while work:
      node, successors = work[-1]
      advanced = False
      for w in successors:
        if w not in index:
          index[w] = low[w] = counter[0]
          counter[0] += 1
          stack.append(w)
          on_stack.add(w)
          work.append((w, iter(sorted(graph.get(w, ())))))
          advanced = True
          break
        if w in on_stack:
          low[node] = min(low[node], index[w])
      if advanced:
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          w = stack.pop()
          on_stack.discard(w)
          component.append(w)
          if w == node:
            break
        if len(component) > 1 or node in graph.get(node, ()):
          out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def _circle_path(graph: Mapping[str, Iterable[str]], component: list[str]) -> list[str]:
  """A shortest circle ``[a, ..., a]`` through the first module of ``component`` (a breadth-first search)."""
  start, inside = component[0], set(component)
  parents, frontier = {start: None}, [start]
  while frontier:
    nxt = []
    for v in frontier:
      for w in sorted(graph.get(v, ())):
        if w == start:
          path = [v]
          while parents[path[-1]] is not None:
            path.append(parents[path[-1]])
          return [start, *reversed(path[:-1]), start] if path[-1] == start else [start, *reversed(path), start]
        if w in inside and w not in parents:
          parents[w] = v
          nxt.append(w)
    frontier = nxt
  return component


def violations(root: str, package: str, ranks: Mapping[str, int],
               pending: Iterable[tuple[str, str]] = ()) -> list[str]:
  """Every broken rule as one line (empty when the package is layered as :data:`RANKS` says)."""
  modules = modules_of(root, package)
  edges = import_edges(root, package)
  pending = set(pending)
  problems, used = [], set()

  def report(edge: Edge, text: str):
    if (edge.source, edge.target) in pending:
      used.add((edge.source, edge.target))
    else:
      problems.append(f"{edge.source}:{edge.line}: {text}")

  for unit in sorted({unit_of(m, package) for m in modules} - set(ranks)):
    problems.append(f"{package}.{unit if unit != '__init__' else ''}: no rank (place it in RANKS)")
  graph: dict[str, set[str]] = {m: set() for m in modules}
  for e in edges:
    owner = private_owner(e.target)
    if owner is not None and not (e.source == owner or e.source.startswith(owner + ".")):
      report(e, f"uses the private name {e.target}")
    target = e.target
    while target and target not in modules:  # a name imported from a module: the module
      target = target.rpartition(".")[0]
    if not target or target == e.source:
      continue
    graph[e.source].add(target)
    src_unit, dst_unit = unit_of(e.source, package), unit_of(target, package)
    if dst_unit == "commands" and src_unit not in ("commands", "cli"):
      report(e, f"imports {target}: only cli.py may import commands")
      continue
    if src_unit != dst_unit and src_unit in ranks and dst_unit in ranks and ranks[src_unit] <= ranks[dst_unit]:
      report(e, f"imports {target}: {src_unit} (rank {ranks[src_unit]}) may import only lower ranks, "
                f"{dst_unit} has rank {ranks[dst_unit]}")
  for component in _cycles(graph):
    problems.append("import circle: " + " -> ".join(_circle_path(graph, component)))
  for stale in sorted(pending - used):
    problems.append(f"pending exception {stale} no longer occurs: remove it from PENDING")
  return problems


# ------------------------------------------------------------------ the package


def test_the_package_is_layered():
  assert violations(ROOT, PACKAGE, RANKS, PENDING) == []


def test_the_rank_table_names_only_what_exists_or_is_planned():
  planned = {"protocol", "analysis", "results"}  # the layout the package is moving to
  present = {unit_of(m, PACKAGE) for m in modules_of(ROOT, PACKAGE)}
  assert set(RANKS) - present <= planned


# ------------------------------------------------------------------ the checker itself


def _package(tmp_path, files: Mapping[str, str]) -> str:
  root = tmp_path / "pkg"
  for rel, text in {"__init__.py": "", **files}.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
  return str(root)


TOY_RANKS = {"__init__": 9, "low": 0, "mid": 1, "high": 2, "commands": 3, "cli": 4, "lib": 2}


def test_checker_accepts_a_layered_package(tmp_path):
  root = _package(tmp_path, {
      "low.py": "X = 1\n_Y = 2\n",
      "mid/__init__.py": "from pkg.mid import _impl\nfrom pkg.mid._impl import run\n",
      "mid/_impl.py": "from pkg import low\ndef run():\n  return low.X\n",
      "high.py": "from pkg import mid\nfrom . import low\n",
      "commands/__init__.py": "from pkg import high\n",
      "cli.py": "def main():\n  from pkg import commands\n",
      "lib.py": "import pkg.low\n",
  })
  assert violations(root, "pkg", TOY_RANKS) == []


@pytest.mark.parametrize("files,expected", [
    # a lower layer importing a higher one, also from inside a function
    ({"low.py": "def f():\n  from pkg import high\n", "high.py": ""},
     "pkg.low:2: imports pkg.high: low (rank 0) may import only lower ranks, high has rank 2"),
    # peers of one rank do not import each other
    ({"high.py": "import pkg.lib\n", "lib.py": ""}, "pkg.high:1: imports pkg.lib: high (rank 2)"),
    # a circle inside one package, through a function-level import
    ({"mid/__init__.py": "", "mid/a.py": "from pkg.mid import b\n",
      "mid/b.py": "def f():\n  from pkg.mid import a\n"},
     "import circle: pkg.mid.a -> pkg.mid.b -> pkg.mid.a"),
    # a library module importing commands
    ({"high.py": "from pkg.commands import run\n", "commands/__init__.py": "def run(): pass\n"},
     "pkg.high:1: imports pkg.commands: only cli.py may import commands"),
    # a module nobody placed
    ({"newcomer.py": ""}, "pkg.newcomer: no rank (place it in RANKS)"),
    # private names of another module, imported or read as an attribute
    ({"low.py": "_Y = 1\n", "mid/__init__.py": "from pkg.low import _Y\n"},
     "pkg.mid:1: uses the private name pkg.low._Y"),
    ({"low.py": "_Y = 1\n", "high.py": "from pkg import low\nZ = low._Y\n"},
     "pkg.high:2: uses the private name pkg.low._Y"),
    # another package's private submodule
    ({"mid/__init__.py": "", "mid/_impl.py": "", "high.py": "from pkg.mid import _impl\n"},
     "pkg.high:1: uses the private name pkg.mid._impl"),
])
def test_checker_reports_each_broken_rule(tmp_path, files, expected):
  problems = violations(_package(tmp_path, files), "pkg", TOY_RANKS)
  assert any(p.startswith(expected) for p in problems), problems


def test_pending_exceptions_silence_one_edge_and_must_still_occur(tmp_path):
  root = _package(tmp_path, {"low.py": "from pkg import high\n", "high.py": ""})
  assert violations(root, "pkg", TOY_RANKS, {("pkg.low", "pkg.high")}) == []
  clean = _package(tmp_path / "clean", {"low.py": "", "high.py": ""})
  assert violations(clean, "pkg", TOY_RANKS, {("pkg.low", "pkg.high")}) == [
      "pending exception ('pkg.low', 'pkg.high') no longer occurs: remove it from PENDING"]


def test_no_test_module_imports_another_test_module():
  """Shared test code lives in helper modules (``tests/helpers.py``, ``tests/methods/support.py``), not in tests."""
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  offenders = []
  for module, path in modules_of(tests_dir, "tests").items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
               [a.name for a in node.names] if isinstance(node, ast.Import) else [])
      for name in names:
        if name.rsplit(".", 1)[-1].startswith("test_") and name != module:
          offenders.append(f"{module}:{node.lineno} imports {name}")
  assert offenders == []
