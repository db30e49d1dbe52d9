"""Loading a user's factory from a file or a module, by spec, with the hash of its source.

A spec is ``path/to/file.py:attr`` or ``package.module:attr``. :func:`load_factory`
imports it and returns a :class:`Plugin`: the factory, a name, the file that
defines it and that file's SHA-256 (the name and hash go into ``results.json`` and
into the cache keys, so editing the file never reuses results of its earlier
contents; only the defining file is hashed: a change in another module it imports
is not seen).

Loading a ``.py`` file executes it, by design: it is the user's own code. The
module runs from the bytes that were hashed, registered in ``sys.modules`` under
a name derived from that hash (loading the same contents again reuses it); its
directory is on ``sys.path`` while it runs, so it can import its neighbours. A
``package.module`` is imported with the current directory on ``sys.path``.

Every failure (no such file, no such attribute, not callable, an import that
raises, a factory that raises) is a one-line ``ValueError``.

This module knows nothing of models or methods: :mod:`unlearn_jax.models` builds
model plugins with it, :mod:`unlearn_jax.plugins` method plugins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from typing import Any, Callable

_MODULE_PREFIX = "_unlearn_jax_plugin_"


@dataclasses.dataclass(frozen=True)
class Plugin:
  """A loaded factory.

  Attributes:
    factory: the callable.
    name: ``<file stem or module>:<attribute>``, e.g. ``kl_finetune:make``.
    source: the resolved path of the file that defines it.
    sha256: SHA-256 of that file's contents (hex).
    spec: the spec as given.
  """

  factory: Callable[..., Any]
  name: str
  source: str
  sha256: str
  spec: str

  def record(self) -> dict[str, str]:
    """What ``results.json`` records: spec, name, source file and content hash."""
    return {"spec": self.spec, "name": self.name, "source": self.source, "sha256": self.sha256}

  def key(self) -> str:
    """A cache-key token of name and contents, independent of where the file lies: ``name@sha256``."""
    return f"{self.name}@{self.sha256}"


def is_spec(text: Any) -> bool:
  """Whether ``text`` is a plugin spec (``file.py:attr`` or ``module:attr``) rather than a registry name."""
  return isinstance(text, str) and ":" in text


def _one_line(err: BaseException) -> str:
  text = " ".join(str(err).split())
  return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _read(path: str, label: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as err:
    raise ValueError(f"{label}: cannot read {path}: {err.strerror or err}") from None


def _exec_file(path: str, content: bytes, digest: str, label: str):
  name = _MODULE_PREFIX + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0]) + "_" + digest[:16]
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses and pickling inside the module look themselves up here
  folder = os.path.dirname(path)
  sys.path.insert(0, folder)
  try:
    exec(compile(content, path, "exec", dont_inherit=True), module.__dict__)
  except (Exception, SystemExit) as err:
    del sys.modules[name]
    raise ValueError(f"{label}: importing {path} raised {_one_line(err)}") from None
  finally:
    if sys.path and sys.path[0] == folder:
      del sys.path[0]
  return module


def _import_module(target: str, label: str):
  cwd = os.getcwd()
  added = cwd not in sys.path
  if added:
    sys.path.insert(0, cwd)
  try:
    return importlib.import_module(target)
  except ModuleNotFoundError as err:
    if err.name and (target == err.name or target.startswith(err.name + ".")):
      raise ValueError(f"{label}: no module named {err.name!r} (and no file {target!r})") from None
    raise ValueError(f"{label}: importing {target} raised {_one_line(err)}") from None
  except (Exception, SystemExit) as err:
    raise ValueError(f"{label}: importing {target} raised {_one_line(err)}") from None
  finally:
    if added and cwd in sys.path:
      sys.path.remove(cwd)


def load_factory(spec: str, what: str) -> Plugin:
  """Loads ``spec`` (``path/to/file.py:attr`` or ``package.module:attr``) as a ``what`` factory.

  ``what`` names the kind in messages (``method``, ``model``). Raises a one-line
  ``ValueError`` for a malformed spec, a missing file or module, an import that
  raises, a missing attribute or one that is not callable.
  """
  label = f"{what} {spec!r}"
  target, sep, attr = str(spec).rpartition(":")
  if not sep or not target or not attr:
    raise ValueError(f"{label}: expected path/to/file.py:factory or package.module:factory")
  if not attr.isidentifier():
    raise ValueError(f"{label}: {attr!r} is not a Python name")
  if target.endswith(".py") or "/" in target or os.sep in target:
    if not os.path.isfile(target):
      raise ValueError(f"{label}: no such file {target!r}")
    path = os.path.realpath(target)
    content = _read(path, label)
    digest = hashlib.sha256(content).hexdigest()
    module = _exec_file(path, content, digest, label)
    name = f"{os.path.splitext(os.path.basename(path))[0]}:{attr}"
  else:
    module = _import_module(target, label)
    path = getattr(module, "__file__", None)
    if not path:
      raise ValueError(f"{label}: module {target!r} has no source file to hash")
    path = os.path.realpath(path)
    digest = hashlib.sha256(_read(path, label)).hexdigest()
    name = f"{target}:{attr}"
  if not hasattr(module, attr):
    raise ValueError(f"{label}: {path} has no attribute {attr!r}")
  factory = getattr(module, attr)
  if not callable(factory):
    raise ValueError(f"{label}: {attr!r} in {path} is not callable (it is a {type(factory).__name__})")
  return Plugin(factory=factory, name=name, source=path, sha256=digest, spec=str(spec))


def call_factory(factory: Callable[..., Any], label: str, *args, **kwargs) -> Any:
  """``factory(*args, **kwargs)``, any exception turned into a one-line ``ValueError`` naming ``label``."""
  try:
    return factory(*args, **kwargs)
  except (Exception, SystemExit) as err:
    raise ValueError(f"{label} raised {_one_line(err)}") from None


def file_origin(obj: Any, name: str, what: str = "method") -> dict[str, Any]:
  """``{name, source, sha256}`` of a factory or object given in Python: its defining file and that file's hash.

  ``source`` and ``sha256`` are ``None`` where the object has no source file.
  """
  try:
    path = inspect.getsourcefile(inspect.unwrap(obj))
  except TypeError:
    path = None
  digest = None
  if path and os.path.isfile(path):
    path = os.path.realpath(path)
    digest = hashlib.sha256(_read(path, f"{what} {name!r}")).hexdigest()
  return {"name": name, "source": path, "sha256": digest}


def safe_name(name: str) -> str:
  """``name`` usable as a directory name (characters other than letters, digits, ``._-`` become ``_``)."""
  return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "method"
