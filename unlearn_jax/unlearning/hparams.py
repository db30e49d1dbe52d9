"""Typed hyperparameter declarations of the unlearning methods.

Every method module declares its factory's hyperparameters next to ``make`` as
a module-level tuple ``HPARAMS`` of :class:`HParam` (name, kind, default, valid
range or choices, a one-line doc). The declaration must match the factory's
signature (names, defaults, kinds): :func:`check_declarations` refuses a
disagreement in one line naming the parameter whenever declarations are read,
for a user's file or module as for the registry (whose test also checks the
order), so it is the single place that says what a user may set:

* :func:`validate` checks user overrides *before anything is trained* and
  returns them coerced to their declared types (an unknown key, a wrong type, a
  value out of range, NaN or infinity is a one-line ``ValueError`` naming the
  method, the key and what is allowed);
* :func:`parse_overrides` does the same for command-line text (``--hp lr=0.01``);
* :func:`resolve_preset` fills the fields a user left ``None`` from a named preset
  (reference settings such as finetune's ``kit`` or scrub's ``MIA``);
* ``unlearn-jax methods M`` lists a method's declarations.

``traceable`` marks the hyperparameters a method uses only arithmetically (both
in ``make`` and in ``unlearn``), so they may be passed as traced JAX scalars
(e.g. a vmapped axis of learning rates). Anything that changes shapes or Python
control flow (epochs, batch sizes, presets, switches, and any value the code
tests with ``if``) is not traceable.

A factory whose module declares no ``HPARAMS`` (e.g. a user's own method) gets
declarations derived from its signature: kinds from annotations or defaults, no
ranges. A module holding several factories attaches each one's declarations to
the function instead (``make.HPARAMS = (...)``), which takes precedence.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import sys
import typing
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from unlearn_jax._validate import check_in, parse_value

KINDS = ("int", "float", "bool", "str", "ints", "floats", "any")
_SEQUENCE_KINDS = {"ints": "int", "floats": "float"}
_KIND_NAMES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string",
               "ints": "list of integers", "floats": "list of numbers", "any": "value"}
MAX_INT = 2**31 - 1  # every integer hyperparameter must fit JAX's default (32-bit) integers
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclasses.dataclass(frozen=True)
class HParam:
  """One declared hyperparameter.

  Attributes:
    name: the factory's keyword.
    kind: ``int``, ``float``, ``bool``, ``str``, ``ints`` / ``floats`` (a sequence whose
      entries obey ``low``/``high``) or ``any`` (unchecked; only in signature-derived
      declarations).
    default: the factory's default (``None`` for fields a preset fills).
    low, high: the valid range, inclusive unless ``low_open`` / ``high_open``; ``None``: unbounded.
    choices: the allowed values of a ``str`` (or ``int``) field.
    doc: one line for ``unlearn-jax methods M``.
    optional: ``None`` is a valid value (a preset or a derived default fills it).
    traceable: the method uses the value only arithmetically, so a traced JAX scalar works.
    low_open, high_open: the bound itself is excluded.
  """

  name: str
  kind: str
  default: Any
  low: Optional[float] = None
  high: Optional[float] = None
  choices: Optional[tuple] = None
  doc: str = ""
  optional: bool = False
  traceable: bool = False
  low_open: bool = False
  high_open: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"hyperparameter {self.name!r}: unknown kind {self.kind!r}; expected one of {list(KINDS)}")
    if self.choices is not None and not isinstance(self.choices, tuple):
      object.__setattr__(self, "choices", tuple(self.choices))

  # ---------------------------------------------------------------- description

  def range_text(self) -> str:
    """What is allowed, e.g. ``an integer >= 1``, ``a number in (0, 1]``, ``one of 'kit', 'kaggle'``."""
    if self.kind == "bool":
      text = "true or false"
    elif self.choices is not None:
      text = "one of " + ", ".join(repr(c) for c in self.choices)
    else:
      what = {"float": "a finite number", "int": "an integer"}.get(self.kind, "a " + _KIND_NAMES[self.kind])
      bounds = self._bounds_text()
      if self.kind in _SEQUENCE_KINDS and bounds:
        text = f"{what}, each {bounds}"
      else:
        text = f"{what} {bounds}".rstrip()
    return text + (" (or null)" if self.optional else "")

  def _bounds_text(self) -> str:
    lo, hi = self.low, self.high
    if lo is None and hi is None:
      return ""
    if hi is None:
      return f"{'>' if self.low_open else '>='} {_num(lo)}"
    if lo is None:
      return f"{'<' if self.high_open else '<='} {_num(hi)}"
    return f"in {'(' if self.low_open else '['}{_num(lo)}, {_num(hi)}{')' if self.high_open else ']'}"

  def type_text(self) -> str:
    """The kind as listed by ``unlearn-jax methods M`` (``int``, ``float?`` for optional ones, ...)."""
    return self.kind + ("?" if self.optional else "")

  # ---------------------------------------------------------------- checking

  def _fail(self, method: str, value: Any) -> ValueError:
    return ValueError(f"method {method!r}: hyperparameter {self.name!r} must be {self.range_text()}, "
                      f"got {_show(value)}")

  def check(self, method: str, value: Any) -> Any:
    """``value`` coerced to this kind (e.g. ``3`` -> ``3.0`` for a float, ``2.0`` -> ``2`` for an int).

    Raises a one-line ``ValueError`` naming ``method``, the key and the valid range
    for a wrong type (1.5 for an int, a string for a bool), a value out of range,
    NaN or infinity.
    """
    if value is None:
      if self.optional or self.kind == "any":
        return None
      raise self._fail(method, value)
    if self.kind == "any":
      return value
    if self.kind in _SEQUENCE_KINDS:
      if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise self._fail(method, value)
      try:
        return tuple(self._scalar(method, _SEQUENCE_KINDS[self.kind], v, value) for v in value)
      except ValueError:
        raise self._fail(method, value) from None
    return self._scalar(method, self.kind, value, value)

  def _scalar(self, method: str, kind: str, value: Any, whole: Any) -> Any:
    if kind == "bool":
      if isinstance(value, (bool, np.bool_)):
        return bool(value)
      raise self._fail(method, whole)
    if kind == "str":
      if not isinstance(value, str):
        raise self._fail(method, whole)
      out = value
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
      raise self._fail(method, whole)
    elif not math.isfinite(float(value)):
      raise self._fail(method, whole)
    elif kind == "int":
      if float(value) != int(value):
        raise self._fail(method, whole)
      out = int(value)
      if not -MAX_INT <= out <= MAX_INT:  # JAX computes with 32-bit integers: larger counts overflow there
        raise ValueError(f"method {method!r}: hyperparameter {self.name!r} must be {self.range_text()} and within "
                         f"+-{MAX_INT} (JAX's 32-bit integers), got {_show(whole)}")
    else:
      out = float(value)
    if self.choices is not None and out not in self.choices:
      raise self._fail(method, whole)
    if kind in ("int", "float") and not self._in_range(out):
      raise self._fail(method, whole)
    return out

  def _in_range(self, x: float) -> bool:
    if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
      return False
    if self.high is not None and (x > self.high or (self.high_open and x == self.high)):
      return False
    return True

  def parse(self, text: str) -> Any:
    """The value command-line ``text`` denotes for this kind, unchecked (``null`` -> ``None``).

    ``int``/``float``: a number; ``bool``: true/false (yes/no, on/off, 1/0); ``str``: the
    text itself; ``ints``/``floats``: comma-separated entries, optionally in brackets.
    Text of the wrong kind is returned as given, so :meth:`check` reports it.
    """
    text = str(text).strip()
    if text.lower() in ("null", "none", "~") and (self.optional or self.kind == "any"):
      return None
    if self.kind == "str":
      return text
    if self.kind == "bool":
      low = text.lower()
      return True if low in _TRUE else False if low in _FALSE else text
    if self.kind in ("int", "float"):
      return _number(text)
    if self.kind in _SEQUENCE_KINDS:
      inner = text[1:-1] if text[:1] in "[(" and text[-1:] in "])" else text
      return [_number(t.strip()) for t in inner.split(",") if t.strip()]
    return parse_value(text)


def _number(text: str) -> Any:
  try:
    return int(text)
  except ValueError:
    pass
  try:
    return float(text)
  except ValueError:
    return text


def _num(x: float) -> str:
  return repr(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _show(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------ declarations of a factory


def _unwrap(factory: Callable) -> Callable:
  while isinstance(factory, functools.partial):
    factory = factory.func
  return factory


def _factory_of(factory: Any) -> Callable:
  if not callable(factory):
    hint = (" (a registered method's factory is unlearn_jax.unlearning.METHODS[name])"
            if isinstance(factory, str) else "")
    raise ValueError(f"expected a method factory, got {_show(factory)}{hint}")
  return factory


def module_declarations(factory: Callable) -> Optional[tuple[HParam, ...]]:
  """The ``HPARAMS`` of ``factory``'s module (or attribute ``HPARAMS`` of the factory itself), or ``None``."""
  factory = _unwrap(factory)
  own = getattr(factory, "HPARAMS", None)
  if own is not None:
    return tuple(own)
  module = sys.modules.get(getattr(factory, "__module__", None) or "")
  found = getattr(module, "HPARAMS", None) if module is not None else None
  return None if found is None else tuple(found)


def declared(factory: Callable) -> dict[str, HParam]:
  """A method factory's hyperparameters by name, in declaration order.

  From its module's ``HPARAMS`` when it declares them, else derived from its signature.
  (A registered method's factory is ``unlearn_jax.unlearning.METHODS[name]``.)
  """
  factory = _factory_of(factory)
  decl = module_declarations(factory)
  if decl is None:
    decl = from_signature(factory)
  else:
    check_declarations(factory, decl)
  out: dict[str, HParam] = {}
  for h in decl:
    if not isinstance(h, HParam):
      raise ValueError(f"HPARAMS of {_describe(factory)} must hold HParam entries, got {_show(h)}")
    if h.name in out:
      raise ValueError(f"HPARAMS of {_describe(factory)} declares {h.name!r} twice")
    out[h.name] = h
  return out


def _describe(factory: Callable) -> str:
  """``module.make`` for a factory of an importable module, ``file.py:make`` for one loaded from a file."""
  factory = _unwrap(factory)
  module = getattr(factory, "__module__", None) or "?"
  qualname = getattr(factory, "__qualname__", repr(factory))
  if module.startswith("_unlearn_jax_plugin_"):  # loaded from a file: name the file
    try:
      return f"{os.path.basename(inspect.getsourcefile(factory) or '?')}:{qualname}"
    except TypeError:
      pass
  return f"{module}.{qualname}"


def _same_default(declared_default: Any, signature_default: Any) -> bool:
  norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
  a, b = norm(declared_default), norm(signature_default)
  if isinstance(a, bool) != isinstance(b, bool):
    return False
  try:
    return bool(a == b)
  except Exception:  # e.g. arrays: compare by identity only
    return a is b


def check_declarations(factory: Callable, decl: Optional[Sequence[Any]] = None) -> None:
  """Checks that ``decl`` (default: the factory's ``HPARAMS``) agrees with the factory's signature.

  Every keyword the factory takes after the model must be declared, every declared
  name must be a keyword it takes (or go to its ``**kwargs``), with the signature's
  default, a kind its annotation allows and a default that passes its own
  declaration; a positional-only parameter cannot be set by name. Raises a one-line
  ``ValueError`` naming the factory and the first parameter that disagrees.
  """
  factory = _factory_of(factory)
  decl = module_declarations(factory) if decl is None else tuple(decl)
  if decl is None:
    return
  where = f"HPARAMS of {_describe(factory)}"
  params = {p.name: p for p in _keyword_parameters(factory)
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
  try:
    hints = typing.get_type_hints(_unwrap(factory))
  except Exception:  # unresolvable annotations: no kind check from them
    hints = {}
  names = []
  for h in decl:
    if not isinstance(h, HParam):
      raise ValueError(f"{where} must hold HParam entries, got {_show(h)}")
    names.append(h.name)
    p = params.get(h.name)
    if p is None:
      if accepts_any_keyword(factory):
        continue
      raise ValueError(f"{where} declares {h.name!r}, but the factory has no parameter {h.name!r} "
                       f"(its parameters: {', '.join(params) or 'none'})")
    if p.kind is inspect.Parameter.POSITIONAL_ONLY:
      raise ValueError(f"{where} declares {h.name!r}, but the factory takes it positionally only "
                       f"(hyperparameters are passed by name)")
    sig_default = None if p.default is inspect.Parameter.empty else p.default
    if not _same_default(h.default, sig_default):
      raise ValueError(f"{where}: {h.name!r} is declared with default {_show(h.default)}, but the factory's "
                       f"default is {_show(sig_default)}")
    hint_kind = _hint_kind(hints.get(h.name))
    if hint_kind is not None and h.kind != "any" and hint_kind != h.kind:
      raise ValueError(f"{where}: {h.name!r} is declared of kind {h.kind!r}, but the factory annotates it "
                       f"as {hint_kind}")
    try:
      h.check("?", h.default)
    except ValueError:
      raise ValueError(f"{where}: {h.name!r} has default {_show(h.default)}, which is not "
                       f"{h.range_text()}") from None
  missing = [n for n in params if n not in names]
  if missing:
    raise ValueError(f"{where} does not declare the factory's parameter {missing[0]!r} "
                     f"(declared: {', '.join(names) or 'none'})")


def _hint_kind(hint: Any) -> Optional[str]:
  """The kind a simple annotation (``int``, ``Optional[float]``, ...) names; ``None`` for anything else."""
  if hint is None:
    return None
  if typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType":
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) != 1:
      return None
    hint = args[0]
  return {bool: "bool", int: "int", float: "float", str: "str"}.get(hint)


def _keyword_parameters(factory: Callable) -> list[inspect.Parameter]:
  """The factory's parameters after the model (the first positional one)."""
  try:
    params = list(inspect.signature(factory).parameters.values())
  except (TypeError, ValueError):
    return []
  if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
    params = params[1:]
  return params


def accepts_any_keyword(factory: Callable) -> bool:
  """Whether the factory takes ``**kwargs`` (then undeclared keys are passed through unchecked)."""
  return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _keyword_parameters(factory))


def from_signature(factory: Callable) -> tuple[HParam, ...]:
  """Declarations derived from a factory's signature: kinds from annotations or defaults, no ranges."""
  base = _unwrap(factory)
  try:
    hints = typing.get_type_hints(base)
  except Exception:  # unresolvable annotations: fall back to the defaults' types
    hints = {}
  out = []
  for p in _keyword_parameters(factory):
    if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
      continue
    default = None if p.default is inspect.Parameter.empty else p.default
    kind, optional = _kind_of(hints.get(p.name), default)
    out.append(HParam(p.name, kind, default, optional=optional or default is None,
                      doc="(from the factory's signature)"))
  return tuple(out)


def _kind_of(hint: Any, default: Any) -> tuple[str, bool]:
  optional = False
  if typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType":
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    hint = args[0] if len(args) == 1 else None
  simple = {bool: "bool", int: "int", float: "float", str: "str"}
  if hint in simple:
    return simple[hint], optional
  if hint is None and type(default) in simple:
    return simple[type(default)], optional
  return "any", True


# ------------------------------------------------------------------ presets


def resolve_preset(label: str, presets: Mapping[str, Mapping[str, Any]], preset: str,
                   overrides: Mapping[str, Any], defaults: Optional[Mapping[str, Any]] = None,
                   declarations: Sequence[HParam] = ()) -> dict[str, Any]:
  """The hyperparameters of ``presets[preset]`` with every non-``None`` override applied.

  ``defaults`` fill the fields a preset does not set (the preset wins over them,
  an override over both). A field declared ``ints``/``floats`` in ``declarations``
  is stored as a tuple, as the presets write sequences. Keys keep their order:
  defaults, then the preset's, then overrides of fields neither sets.

  Raises a one-line ``ValueError`` (``unknown <label> 'x'; expected one of [...]``)
  for a preset that is not in ``presets``.
  """
  check_in(label, preset, presets)
  sequences = {h.name for h in declarations if h.kind in _SEQUENCE_KINDS}
  hp = dict(defaults or {}, **presets[preset])
  for name, value in overrides.items():
    if value is not None:
      hp[name] = tuple(value) if name in sequences else value
  return hp


# ------------------------------------------------------------------ validation


def validate(method_name: str, factory: Callable, overrides: Mapping[str, Any]) -> dict[str, Any]:
  """``overrides`` checked against the declarations of ``factory`` and coerced to their kinds.

  Raises a one-line ``ValueError`` for an unknown key (listing the valid keys) or an
  invalid value (naming ``method_name``, the key and the valid range).
  """
  factory = _factory_of(factory)
  decl = declared(factory)
  out: dict[str, Any] = {}
  for key, value in overrides.items():
    if key not in decl:
      if module_declarations(factory) is None and accepts_any_keyword(factory):
        out[key] = value
        continue
      valid = ", ".join(decl) or "none"
      raise ValueError(f"method {method_name!r} has no hyperparameter {key!r}; valid keys: {valid}")
    out[key] = decl[key].check(method_name, value)
  return out


def parse_overrides(method_name: str, factory: Callable, texts: Mapping[str, str]) -> dict[str, Any]:
  """Command-line ``NAME -> text`` overrides parsed by their declared kinds, then :func:`validate`-d."""
  factory = _factory_of(factory)
  decl = declared(factory)
  parsed = {}
  for key, text in texts.items():
    if key in decl:
      parsed[key] = decl[key].parse(text)
    else:
      parsed[key] = parse_value(text)
  return validate(method_name, factory, parsed)


def describe_table(decl: Mapping[str, HParam]) -> list[tuple[str, str, str, str, str]]:
  """Rows ``(name, type, default, range, doc)`` for listing ``decl``."""
  rows = []
  for h in decl.values():
    default = _show(h.default)
    rng = h.range_text()
    if h.traceable:
      rng += " [traceable]"
    rows.append((h.name, h.type_text(), default, rng, h.doc))
  return rows
