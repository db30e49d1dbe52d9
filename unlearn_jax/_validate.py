"""Argument checks that raise one-line ``ValueError``s naming the problem, and the reading of
command-line values (:func:`parse_value`)."""

from __future__ import annotations

from typing import Any, Iterable

import yaml


def check_in(name: str, value: Any, allowed: Iterable[Any]) -> None:
  """Raises if ``value`` is not one of ``allowed``."""
  allowed = list(allowed)
  if value not in allowed:
    raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(map(str, allowed))}")


def check_fraction(name: str, value: float) -> None:
  """Raises unless ``0 < value < 1``."""
  if not 0.0 < float(value) < 1.0:
    raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")


def check_positive_int(name: str, value: int, minimum: int = 1) -> None:
  """Raises unless ``value`` is an integer ``>= minimum``."""
  if int(value) != value or int(value) < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


# Without 64-bit mode JAX keeps the low 32 bits of a seed: 2**32 would silently equal seed 0.
MAX_SEED = 2**32 - 1


def check_seed(name: str, value: int) -> None:
  """Raises unless ``value`` is an integer in ``[0, 2**32)``, the seeds ``jax.random.key`` keeps apart."""
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
    raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}] (JAX keys hold 32 bits), got {value!r}")


def parse_value(text: str) -> Any:
  """``"0.01"`` -> 0.01, ``"1e-4"`` -> 0.0001, ``"true"`` -> True, ``"null"`` -> None, ``"[1,2]"`` -> [1, 2],
  else the string. (YAML 1.1 reads ``1e-4`` without a dot as a string; it is a float here.)"""
  try:
    value = yaml.safe_load(text)
  except yaml.YAMLError:
    return text
  if isinstance(value, str):
    try:
      return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity", "+inf") else value
    except ValueError:
      return value
  return value
