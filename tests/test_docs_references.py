"""Every file the package, the examples, the benchmarks, the design notes or the README point to exists.

References are repository paths (``docs/metric.md``, ``unlearn_jax/tuning.py``,
``benchmarks/README.md``, ``tests/data/vectors/``), paths inside the package written from
its root (``configs/default.py``, ``unlearning/toolkit.py``) and Sphinx module roles
(``:mod:`unlearn_jax.seeds```). A reference to a file outside the repository (the team's
``shared/spec`` notes, which a user who clones the repository does not have) fails too.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Mapping

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("unlearn_jax", "examples", "benchmarks", "docs")
SCANNED_FILES = ("README.md", "pyproject.toml")
TEXT_SUFFIXES = (".py", ".md", ".toml", ".txt", ".cfg", ".yaml", ".yml")

# A path from the repository root: a top folder, then path characters, ending in a file or a slash.
_REPO_PATH = re.compile(r"(?<![\w./-])((?:unlearn_jax|tests|benchmarks|examples|docs)/[\w./-]*[\w/])")
# A path inside the package written from its root, e.g. ``configs/default.py``.
_PACKAGE_PATH = re.compile(r"(?<![\w./-])((?:configs|data|models|training|unlearning|metrics|commands|interop|"
                           r"protocol|analysis|results)/[\w/-]+\.py)\b")
_MODULE_ROLE = re.compile(r":mod:`~?(unlearn_jax(?:\.\w+)*)`")
_OUTSIDE = re.compile(r"shared/spec/[\w.-]*")

# References that are known to be stale and are being fixed elsewhere; each must still occur.
PENDING: set[tuple[str, str]] = {
}


def _files(root: str) -> list[str]:
  out = [name for name in SCANNED_FILES if os.path.isfile(os.path.join(root, name))]
  for top in SCANNED:
    for folder, dirs, files in os.walk(os.path.join(root, top)):
      dirs[:] = sorted(d for d in dirs if d != "__pycache__")
      out += sorted(os.path.relpath(os.path.join(folder, f), root) for f in files if f.endswith(TEXT_SUFFIXES))
  return out


def _module_exists(root: str, dotted: str) -> bool:
  path = os.path.join(root, *dotted.split("."))
  return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def references(root: str, files: Iterable[str]) -> list[tuple[str, int, str, str]]:
  """``(file, line, reference, kind)`` for every reference in ``files``; kind: repo, package, module, outside."""
  found = []
  for rel in files:
    with open(os.path.join(root, rel), encoding="utf-8") as f:
      lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
      for m in _REPO_PATH.finditer(line):
        found.append((rel, number, m.group(1).rstrip("."), "repo"))
      for m in _PACKAGE_PATH.finditer(line):
        if not line[:m.start()].endswith(("unlearn_jax/", "tests/", "benchmarks/", "examples/")):
          found.append((rel, number, m.group(1), "package"))
      for m in _MODULE_ROLE.finditer(line):
        found.append((rel, number, m.group(1), "module"))
      for m in _OUTSIDE.finditer(line):
        found.append((rel, number, m.group(0), "outside"))
  return found


def broken(root: str, files: Iterable[str], pending: Iterable[tuple[str, str]] = ()) -> list[str]:
  """One line per reference that does not resolve inside ``root`` (and per stale pending entry)."""
  pending, used, problems = set(pending), set(), []
  for rel, number, ref, kind in references(root, files):
    if kind == "repo":
      ok = os.path.exists(os.path.join(root, ref))
    elif kind == "package":
      ok = os.path.exists(os.path.join(root, "unlearn_jax", ref))
    elif kind == "module":
      ok = _module_exists(root, ref)
    else:
      ok = False
    if ok:
      continue
    if (rel, ref) in pending:
      used.add((rel, ref))
      continue
    where = "outside the repository" if kind == "outside" else "does not exist"
    problems.append(f"{rel}:{number}: {ref} {where}")
  problems += [f"pending reference {p} no longer occurs: remove it from PENDING" for p in sorted(pending - used)]
  return problems


def test_every_reference_resolves_inside_the_repository():
  assert broken(ROOT, _files(ROOT), PENDING) == []


def test_the_design_notes_are_cited():
  cited = {ref for _, _, ref, kind in references(ROOT, _files(ROOT)) if kind == "repo" and ref.startswith("docs/")}
  assert {"docs/metric.md", "docs/algorithms.md", "docs/evaluations.md", "docs/architecture.md"} <= cited


def _tree(tmp_path, files: Mapping[str, str]) -> str:
  for rel, text in files.items():
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return str(tmp_path)


@pytest.mark.parametrize("text,expected", [
    ('"""See ``docs/nowhere.md``."""\n', "m.py:1: docs/nowhere.md does not exist"),
    ('x = 1\n# measured by benchmarks/bench_gone.py\n', "m.py:2: benchmarks/bench_gone.py does not exist"),
    ('"""Defaults: ``configs/missing.py``."""\n', "m.py:1: configs/missing.py does not exist"),
    ('"""Uses :mod:`unlearn_jax.autotune`."""\n', "m.py:1: unlearn_jax.autotune does not exist"),
    ('"""Definitions: ``shared/spec/metric.md``."""\n', "m.py:1: shared/spec/metric.md outside the repository"),
])
def test_a_broken_reference_fails(tmp_path, text, expected):
  root = _tree(tmp_path, {"unlearn_jax/__init__.py": "", "unlearn_jax/m.py": text, "docs/metric.md": "x",
                          "unlearn_jax/configs/default.py": ""})
  problems = broken(root, ["unlearn_jax/m.py"])
  assert [p.replace("unlearn_jax/", "", 1) for p in problems] == [expected]


def test_existing_references_pass_and_pending_entries_must_still_occur(tmp_path):
  root = _tree(tmp_path, {"unlearn_jax/__init__.py": "", "unlearn_jax/seeds.py": "", "docs/metric.md": "x",
                          "unlearn_jax/configs/__init__.py": "", "unlearn_jax/configs/default.py": "",
                          "unlearn_jax/m.py": '"""``docs/metric.md``, ``configs/default.py``, '
                                              ':mod:`unlearn_jax.seeds`, :mod:`~unlearn_jax.configs`."""\n'})
  assert broken(root, ["unlearn_jax/m.py"]) == []
  assert broken(root, ["unlearn_jax/m.py"], {("unlearn_jax/m.py", "docs/gone.md")}) == [
      "pending reference ('unlearn_jax/m.py', 'docs/gone.md') no longer occurs: remove it from PENDING"]
