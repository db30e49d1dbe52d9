"""Checks and escapes for what commands read back from files a user may have edited.

``results.json`` and ``populations.npz`` are outputs of ``evaluate``, but ``compare``,
``leaderboard``, ``stability`` and ``sweep`` read them back later, when they may have been
edited, truncated or written by something else. Nothing read there is trusted:

* :func:`check_results` checks every field those commands use, after the JSON parses:
  numbers are numbers (not strings, booleans, ``null`` where a number is required, nor
  integers too large for a float such as ``10**400``), ``per_example_epsilons`` lie in
  the metric's range ``[0, EPSILON_CAP]``, ``num_models_scored`` is an integer >= 2
  and agrees with the per-model lists, and the forgetting quality F recomputed from
  the epsilons equals the recorded one (to :data:`F_TOLERANCE`);
* :func:`check_population_arrays` checks a populations file's arrays: real numeric
  dtypes only (a string, object or complex array is refused), accuracies in ``[0, 1]``,
  epsilons in range and ``points`` equal to the points of those epsilons at its N;
* :func:`check_pair` checks that a results file and the populations file beside it
  describe the same N and the same epsilons;
* :func:`terminal_text` / :func:`markdown_cell` escape text fields (method names,
  hyperparameter strings, the dataset) before they reach the terminal or a markdown
  table: control characters (newlines, ANSI escape sequences) are shown as ``\\n``,
  ``\\x1b``, ..., and ``|`` is escaped in table cells.

Every failure is a one-line ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np

# The metric's largest per-example epsilon (``unlearn_jax.metrics.privacy.EPSILON_CAP``).
EPSILON_CAP = 50.0
# |F recomputed - F recorded| allowed: both are float64 means of the same points.
F_TOLERANCE = 1e-9
MAX_SHOWN = 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# ------------------------------------------------------------------ text


def terminal_text(value: Any) -> str:
  """``value`` as one printable line: control characters (``\\n``, ``\\x1b`` of ANSI sequences, ...) escaped."""
  text = value if isinstance(value, str) else str(value)
  return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def markdown_cell(value: Any) -> str:
  """``value`` as the text of one markdown table cell: :func:`terminal_text` with ``|`` escaped."""
  return terminal_text(value).replace("|", "\\|")


def _show(value: Any) -> str:
  try:
    text = repr(value)
  except ValueError:  # an int too large for repr (Python's digit limit)
    text = f"an integer of more than {MAX_SHOWN} digits"
  text = terminal_text(text)
  return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


# ------------------------------------------------------------------ numbers


def as_number(value: Any) -> float | None:
  """``value`` as a float if it is a JSON number a float can hold (NaN and infinities included), else ``None``.

  Booleans, strings, ``null``, containers and integers beyond float range are not numbers.
  """
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  try:
    return float(value)
  except OverflowError:
    return None


def _number(where: str, field: str, value: Any, *, low: float | None = None, high: float | None = None,
            allow_null: bool = False, allow_nan: bool = False) -> float | None:
  if value is None and allow_null:
    return None
  x = as_number(value)
  if x is None or (math.isnan(x) and not allow_nan) or math.isinf(x):
    need = ", ".join(["finite"] + (["NaN"] if allow_nan else []) + (["null"] if allow_null else []))
    raise ValueError(f"{where}: field {_label(field)} must be a number ({need}), got {_show(value)}")
  if not math.isnan(x) and ((low is not None and x < low) or (high is not None and x > high)):
    raise ValueError(f"{where}: field {_label(field)} must lie in [{_bound(low)}, {_bound(high)}], "
                     f"got {_show(value)}")
  return x


def _label(field: str) -> str:
  """Top-level fields quoted (``'final_score'``), nested ones dotted (``cost.relative_to_retrain``)."""
  return field if "." in field else repr(field)


def _bound(x: float | None) -> str:
  return "inf" if x is None else f"{x:g}"


def _integer(where: str, field: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= 2**31 - 1:
    raise ValueError(f"{where}: field {field!r} must be an integer in [{minimum}, {2**31 - 1}], got {_show(value)}")
  return value


# ------------------------------------------------------------------ results.json


def check_results(data: Mapping[str, Any], where: str) -> None:
  """Raises a one-line ``ValueError`` naming ``where`` and the field when ``data`` is not a results record
  whose numbers ``compare``, ``leaderboard``, ``stability`` and ``sweep`` can use.

  Checks (fields other than ``method``, ``final_score`` and ``forgetting_quality`` are
  optional, as older files lack some): ``method`` and ``dataset`` are strings; F lies in
  ``[0, 1]``; the final score is a non-negative number or NaN (as ``evaluate`` writes
  an undefined one); ``num_models`` / ``num_models_scored`` are integers >= 2;
  ``per_example_epsilons`` a non-empty list of numbers in ``[0, EPSILON_CAP]``, whose
  points at ``num_models_scored`` average to the recorded F; the per-model accuracy
  lists have ``num_models_scored`` entries in ``[0, 1]``; the other summary numbers are
  numbers (or null).
  """
  for field in ("method", "final_score", "forgetting_quality"):
    if field not in data:
      raise ValueError(f"{where} lacks field {field!r}")
  for field in ("method", "dataset"):
    if field in data and not isinstance(data[field], str):
      raise ValueError(f"{where}: field {field!r} must be a string, got {_show(data[field])}")
  fq = _number(where, "forgetting_quality", data["forgetting_quality"], low=0.0, high=1.0, allow_null=True)
  _number(where, "final_score", data["final_score"], low=0.0, allow_null=True, allow_nan=True)
  n_scored = None
  for field in ("num_models", "num_models_scored"):
    if field in data:
      value = _integer(where, field, data[field], 2)
      if field == "num_models_scored":
        n_scored = value
  if n_scored is None and "num_models" in data:
    n_scored = data["num_models"]
  if "num_models" in data and n_scored is not None and n_scored > data["num_models"]:
    raise ValueError(f"{where}: num_models_scored ({n_scored}) exceeds num_models ({data['num_models']})")
  for field in ("unlearned", "retrained", "mia", "cost", "hyperparameters"):
    if not isinstance(data.get(field, {}), Mapping):
      raise ValueError(f"{where}: field {field!r} must be an object, got {_show(data[field])}")
  for kind in ("unlearned", "retrained"):
    for name, summary in data.get(kind, {}).items():
      if not isinstance(summary, Mapping):
        raise ValueError(f"{where}: field {kind}.{name} must be an object with a numeric 'mean'")
      _number(where, f"{kind}.{name}.mean", summary.get("mean"), low=0.0, high=1.0, allow_null=True)
      per_model = summary.get("per_model")
      if per_model is not None:
        if not isinstance(per_model, list) or (n_scored is not None and len(per_model) != n_scored):
          raise ValueError(f"{where}: field {kind}.{name}.per_model must be a list of {n_scored} numbers "
                           f"(num_models_scored), got {_show(per_model)}")
        for value in per_model:
          _number(where, f"{kind}.{name}.per_model", value, low=0.0, high=1.0)
  check = data.get("degenerate")
  if check is not None and (not isinstance(check, Mapping) or not isinstance(check.get("reasons", []), list)):
    raise ValueError(f"{where}: field 'degenerate' must be an object with a list of 'reasons', got {_show(check)}")
  _number(where, "mia.unlearned", data.get("mia", {}).get("unlearned"), low=0.0, high=1.0, allow_null=True)
  _number(where, "cost.relative_to_retrain", data.get("cost", {}).get("relative_to_retrain"), low=0.0,
          allow_null=True)
  if "per_example_epsilons" in data:
    eps = epsilons_of(data["per_example_epsilons"], where, "per_example_epsilons")
    if n_scored is None:
      raise ValueError(f"{where}: per_example_epsilons need num_models_scored to be scored")
    if fq is None:
      raise ValueError(f"{where}: field forgetting_quality is null although per_example_epsilons are recorded")
    recomputed = _points(eps, n_scored).mean()
    if abs(recomputed - fq) > F_TOLERANCE:
      raise ValueError(f"{where}: forgetting_quality {fq!r} disagrees with its per_example_epsilons, whose points at "
                       f"N = {n_scored} average to {recomputed!r}")


def epsilons_of(value: Any, where: str, field: str) -> np.ndarray:
  """``value`` as a ``[E]`` float64 array of per-example epsilons in ``[0, EPSILON_CAP]`` (E >= 1), or a one-line error."""
  if not isinstance(value, (list, np.ndarray)) or len(value) == 0:
    raise ValueError(f"{where}: field {field} must be a non-empty list of numbers, got {_show(value)}")
  if isinstance(value, list):
    bad = next((v for v in value if as_number(v) is None), _OK)
    if bad is not _OK:
      raise ValueError(f"{where}: field {field} must hold numbers only, got {_show(bad)}")
  eps = np.asarray(value, np.float64)
  if eps.ndim != 1:
    raise ValueError(f"{where}: field {field} must be a flat list, got shape {eps.shape}")
  bad = ~np.isfinite(eps) | (eps < 0.0) | (eps > EPSILON_CAP)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise ValueError(f"{where}: field {field} must lie in [0, {EPSILON_CAP:g}] (the metric's range); "
                     f"entry {i} is {eps[i]!r}")
  return eps


_OK = object()


def _points(eps: np.ndarray, num_models: int) -> np.ndarray:
  from unlearn_jax.metrics import epsilon_points
  return np.asarray(epsilon_points(eps, int(num_models)), np.float64)


# ------------------------------------------------------------------ populations.npz


def check_population_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
  """Raises a one-line ``ValueError`` for a non-real-numeric array (strings, objects, complex, booleans),
  accuracies outside ``[0, 1]``, epsilons outside the metric's range, or ``points`` that are not the
  points of ``epsilons`` at N (the number of unlearned models). Shapes are checked by the caller."""
  for name, value in arrays.items():
    kind = np.asarray(value).dtype.kind
    if kind not in "fiu":
      raise ValueError(f"{where}: array {name!r} must be real numbers, got dtype {np.asarray(value).dtype}")
  for name, value in arrays.items():
    if name.endswith("_accuracy"):
      a = np.asarray(value, np.float64)
      if np.any(~np.isfinite(a) | (a < 0.0) | (a > 1.0)):
        raise ValueError(f"{where}: array {name!r} must hold accuracies in [0, 1]")
  if "epsilons" in arrays:
    eps = epsilons_of(np.asarray(arrays["epsilons"], np.float64).reshape(-1), where, "epsilons")
    conf = arrays.get("unlearned/forget_confidence")
    if conf is not None and np.ndim(conf) == 2 and "points" in arrays:
      n = int(np.shape(conf)[0])
      if n < 2:
        raise ValueError(f"{where}: populations of {n} model(s); the metric needs N >= 2")
      points = np.asarray(arrays["points"], np.float64).reshape(-1)
      if points.shape != eps.shape or not np.allclose(points, _points(eps, n), rtol=0.0, atol=1e-12):
        raise ValueError(f"{where}: array 'points' is not the points of 'epsilons' at N = {n}")


def check_pair(results: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str) -> None:
  """Raises when a results record and its populations disagree on N or on the per-example epsilons."""
  n = results.get("num_models_scored", results.get("num_models"))
  got = int(np.shape(arrays["unlearned/forget_confidence"])[0])
  if n is not None and n != got:
    raise ValueError(f"{where}: populations hold {got} models per kind but results.json says "
                     f"num_models_scored = {n}")
  eps = results.get("per_example_epsilons")
  if eps is not None:
    stored = np.asarray(arrays["epsilons"], np.float64).reshape(-1)
    mine = np.asarray(eps, np.float64)
    if mine.shape != stored.shape or not np.array_equal(mine, stored):
      raise ValueError(f"{where}: per_example_epsilons of results.json differ from the populations file's epsilons")
