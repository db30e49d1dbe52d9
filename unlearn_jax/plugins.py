"""A user's own unlearning method or model, loaded from a file or a module.

``--method path/to/file.py:make`` or ``--method package.module:make`` names a
factory with the built-in methods' contract, ``make(model, **hyperparameters)
-> UnlearningMethod``; ``--model path/to/file.py:make`` (or ``module:make``) a
Flax module factory ``make(num_classes, conv_impl, dtype) -> nn.Module``
(built by :func:`unlearn_jax.models.get_model`). The loading itself (specs,
hashes, one-line errors) is :mod:`unlearn_jax.loading`; its names are re-exported
here.

:func:`resolve_method` / :func:`build_method` accept what a configured method
may be: a registry name, a plugin spec, a factory or a built
:class:`~unlearn_jax.unlearning.UnlearningMethod`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

from unlearn_jax.loading import Plugin, call_factory, file_origin, is_spec, load_factory, safe_name
from unlearn_jax.models import build_model
from unlearn_jax.unlearning import METHODS, UnlearningMethod, hparams

__all__ = ["Plugin", "call_factory", "is_spec", "load_factory", "safe_name", "build_model", "model_key",
           "model_record", "MethodSource", "resolve_method", "validate_method", "build_method"]


# ------------------------------------------------------------------ models


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


def resolve_method(method: Any) -> MethodSource:
  """A registry name, a plugin spec, a factory or an ``UnlearningMethod``, as a :class:`MethodSource`."""
  if isinstance(method, UnlearningMethod):
    return MethodSource(method.name, None, method, file_origin(method.unlearn, method.name))
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
    return MethodSource(name, method, None, file_origin(base, name))
  raise ValueError(f"method must be a registry name, a plugin spec, a factory or an UnlearningMethod, "
                   f"got a {type(method).__name__}")


def validate_method(method: Any, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
  """Resolves ``method`` and checks ``hyperparameters`` against its declarations (coerced copy returned)."""
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
