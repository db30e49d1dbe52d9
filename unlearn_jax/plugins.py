"""A user's own unlearning method or model, loaded from a file or a module.

``--method path/to/file.py:make`` or ``--method package.module:make`` names a
factory with the built-in methods' contract, ``make(model, **hyperparameters)
-> UnlearningMethod``; ``--model path/to/file.py:make`` (or ``module:make``) a
Flax module factory ``make(num_classes, conv_impl, dtype) -> nn.Module``.
:func:`load_factory` imports it and returns a :class:`Plugin`: the factory, a
name, the file that defines it and that file's SHA-256. The name and hash go
into ``results.json`` and into the cache keys, so editing the file never reuses
results of its earlier contents (only the defining file is hashed: a change in
another module it imports is not seen).

Loading a ``.py`` file executes it, by design: it is the user's own code. The
module runs from the bytes that were hashed, registered in ``sys.modules`` under
a name derived from that hash (loading the same contents again reuses it); its
directory is on ``sys.path`` while it runs, so it can import its neighbours. A
``package.module`` is imported with the current directory on ``sys.path``.

Every failure (no such file, no such attribute, not callable, an import that
raises, a factory that raises or returns the wrong thing) is a one-line
``ValueError``.

:func:`resolve_method` / :func:`build_method` accept what
:attr:`unlearn_jax.protocol.run.EvalConfig.method` may hold: a registry name, a
plugin spec, a factory or a built :class:`~unlearn_jax.unlearning.UnlearningMethod`.
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
from typing import Any, Callable, Mapping, Optional

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


# ------------------------------------------------------------------ models


def build_model(spec: str, num_classes: int, conv_impl: str = "xla", dtype=None):
  """The Flax module a ``--model`` plugin spec builds: ``make(num_classes, conv_impl, dtype)``."""
  import flax.linen as nn
  plugin = load_factory(spec, "model")
  model = call_factory(plugin.factory, f"model factory {spec!r}", num_classes, conv_impl, dtype)
  if not isinstance(model, nn.Module):
    raise ValueError(f"model factory {spec!r} returned a {type(model).__name__}, not a flax.linen Module")
  return model


def model_key(model: str) -> str:
  """``model`` for cache keys and setups: a registry name as is, a plugin as ``name@sha256``."""
  return load_factory(model, "model").key() if is_spec(model) else model


def model_record(model: str) -> Optional[dict[str, str]]:
  """The ``results.json`` record of a model plugin (``None`` for a registry name)."""
  return load_factory(model, "model").record() if is_spec(model) else None


# ------------------------------------------------------------------ methods


@dataclasses.dataclass(frozen=True)
class MethodSource:
  """What a configured method refers to: a factory (to build with hyperparameters) or a built method.

  Attributes:
    name: the registry name, or the plugin's / object's name (for messages and validation).
    factory: the factory, or ``None`` when ``built`` is given.
    built: an :class:`UnlearningMethod` given as is.
    origin: ``None`` for registry methods; else ``{spec?, name, source, sha256}``.
  """

  name: str
  factory: Optional[Callable[..., Any]]
  built: Any
  origin: Optional[dict[str, Any]]


def _file_origin(obj: Any, name: str) -> dict[str, Any]:
  """Name, defining file and its hash for a factory or method object given in Python."""
  try:
    path = inspect.getsourcefile(inspect.unwrap(obj))
  except TypeError:
    path = None
  digest = None
  if path and os.path.isfile(path):
    path = os.path.realpath(path)
    digest = hashlib.sha256(_read(path, f"method {name!r}")).hexdigest()
  return {"name": name, "source": path, "sha256": digest}


def resolve_method(method: Any) -> MethodSource:
  """A registry name, a plugin spec, a factory or an ``UnlearningMethod``, as a :class:`MethodSource`."""
  from unlearn_jax.unlearning import METHODS, UnlearningMethod
  if isinstance(method, UnlearningMethod):
    return MethodSource(method.name, None, method, _file_origin(method.unlearn, method.name))
  if isinstance(method, str):
    if method in METHODS:
      return MethodSource(method, METHODS[method], None, None)
    if is_spec(method):
      plugin = load_factory(method, "method")
      return MethodSource(plugin.name, plugin.factory, None, plugin.record())
    raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)} or path/to/file.py:factory "
                     f"or package.module:factory")
  if callable(method):
    if any(method is f for f in METHODS.values()):
      name = next(n for n, f in METHODS.items() if f is method)
      return MethodSource(name, method, None, None)
    base = getattr(method, "func", method)
    name = f"{getattr(base, '__module__', '?')}:{getattr(base, '__qualname__', type(base).__name__)}"
    return MethodSource(name, method, None, _file_origin(base, name))
  raise ValueError(f"method must be a registry name, a plugin spec, a factory or an UnlearningMethod, "
                   f"got a {type(method).__name__}")


def validate_method(method: Any, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
  """Resolves ``method`` and checks ``hyperparameters`` against its declarations (coerced copy returned)."""
  from unlearn_jax.unlearning import hparams
  src = resolve_method(method)
  if src.built is not None:
    if hyperparameters:
      raise ValueError(f"method {src.name!r} was given as a built UnlearningMethod; its hyperparameters are "
                       f"fixed (got overrides {sorted(hyperparameters)}): pass its factory instead")
    return {}
  return hparams.validate(src.name, src.factory, hyperparameters)


def build_method(method: Any, model, hyperparameters: Mapping[str, Any], recipe=None):
  """The configured method built for ``model``, with its origin: ``(UnlearningMethod, origin or None)``.

  Hyperparameters are validated first (:func:`validate_method`); ``recipe`` is
  given to ``retrain`` when it sets none. A plugin factory that raises, or that
  returns something other than an ``UnlearningMethod``, is a one-line error.
  """
  from unlearn_jax.unlearning import UnlearningMethod
  src = resolve_method(method)
  hp = validate_method(method, hyperparameters)
  if src.built is not None:
    return src.built, src.origin
  if src.origin is None:  # a registered method
    if src.name == "retrain" and "recipe" not in hp and recipe is not None:
      hp["recipe"] = recipe
    try:
      built = src.factory(model, **hp)
    except TypeError as err:
      raise ValueError(f"bad hyperparameters for method {src.name!r}: {err}") from None
  else:
    built = call_factory(src.factory, f"method factory {src.origin.get('spec', src.name)!r}", model, **hp)
  if not isinstance(built, UnlearningMethod):
    raise ValueError(f"method factory {src.name!r} returned a {type(built).__name__}, not an UnlearningMethod")
  return built, src.origin


def safe_name(name: str) -> str:
  """``name`` usable as a directory name (characters other than letters, digits, ``._-`` become ``_``)."""
  return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "method"
