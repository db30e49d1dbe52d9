"""A method's own diagnostics (``UnlearnResult.metrics``), kept per seed and summarised.

Every unlearning run returns, beside the unlearned model, a mapping of named arrays
of a fixed shape per method (a loss per epoch, a fraction of parameters dampened, ...).
The protocol keeps them for every seed:

* in the unlearning chunk files (``diag/<name>``, ``[seeds, ...]``) beside the measurements;
* in ``populations.npz`` as ``diagnostics/<name>``, ``[N, ...]`` for the N scored seeds
  (seeds dropped with ``--allow-nan-drop`` are dropped here too);
* in ``results.json`` under ``diagnostics``: per name its per-seed ``shape`` and the
  ``mean``, ``sd`` (sample standard deviation over seeds; 0 for one seed), ``min`` and
  ``max`` over the scored seeds. A scalar diagnostic is summarised as is; one with
  entries (e.g. one value per epoch) by its last entry (``of: "last entry"``), the
  value at the end of the run (``of: "empty"`` and null statistics for an array with no
  entries); ``populations.npz`` keeps every entry.

Non-finite values are counted (``nonfinite``) and left out of the statistics, which are
``null`` when no seed has a finite value. The printed summary of ``evaluate`` and the
``sweep`` tables show the means (a sweep column ``diag:<name>`` per diagnostic).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

CHUNK_PREFIX = "diag/"
POPULATIONS_PREFIX = "diagnostics/"


def from_flat(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The per-seed diagnostics among a chunk's flat arrays (``diag/<name>`` -> ``<name>``)."""
  return {k[len(CHUNK_PREFIX):]: np.asarray(v) for k, v in flat.items() if k.startswith(CHUNK_PREFIX)}


def _stat(x: float) -> Any:
  return float(x) if math.isfinite(float(x)) else None


def summarise(per_seed: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
  """``{name: {shape, of, mean, sd, min, max, nonfinite}}`` over the seeds (the leading axis)."""
  out = {}
  for name, values in per_seed.items():
    a = np.asarray(values, np.float64)
    n = a.shape[0]
    shape = list(a.shape[1:])
    if a.ndim > 1 and a.size == 0:  # an empty trace (e.g. no steps of some phase): nothing to summarise
      out[name] = {"shape": shape, "of": "empty", "mean": None, "sd": None, "min": None, "max": None,
                   "num_seeds": int(n), "nonfinite": 0}
      continue
    per = a.reshape(n, -1)[:, -1] if a.ndim > 1 else a.reshape(n)
    finite = per[np.isfinite(per)]
    stats = {"mean": None, "sd": None, "min": None, "max": None}
    if finite.size:
      stats = {"mean": _stat(finite.mean()), "sd": _stat(finite.std(ddof=1)) if finite.size > 1 else 0.0,
               "min": _stat(finite.min()), "max": _stat(finite.max())}
    out[name] = {"shape": shape, "of": "value" if not shape else "last entry", **stats,
                 "num_seeds": int(n), "nonfinite": int(n - finite.size)}
  return out


def column_name(name: str, summary: Mapping[str, Any]) -> str:
  """The table column of a diagnostic: ``diag:<name>`` (``diag:<name>[-1]`` for the last entry)."""
  return f"diag:{name}" + ("[-1]" if summary.get("of") == "last entry" else "")


def table_cells(results: Mapping[str, Any]) -> dict[str, float]:
  """``{column: mean}`` of a results dict's diagnostics (NaN where no seed had a finite value)."""
  diag = results.get("diagnostics")
  if not isinstance(diag, Mapping):
    return {}
  cells = {}
  for name, s in diag.items():
    if isinstance(s, Mapping):
      mean = s.get("mean")
      cells[column_name(name, s)] = float(mean) if isinstance(mean, (int, float)) else float("nan")
  return cells


def _num(x: Any) -> str:
  return "n/a" if x is None else f"{x:.4g}"


def summary_lines(results: Mapping[str, Any]) -> list[str]:
  """Printed lines, one per diagnostic: ``diagnostic loss[-1]: mean 0.31 ± sd 0.02 [min 0.28, max 0.35]``."""
  diag = results.get("diagnostics")
  if not isinstance(diag, Mapping) or not diag:
    return []
  lines = []
  for name, s in diag.items():
    if s.get("of") == "empty":
      lines.append(f"diagnostic {name}: empty (shape {s.get('shape')} per seed)")
      continue
    label = name + ("[-1]" if s.get("of") == "last entry" else "")
    shape = f" (of {'x'.join(str(d) for d in s['shape'])} per seed)" if s.get("shape") else ""
    bad = f"; {s['nonfinite']} seed(s) non-finite" if s.get("nonfinite") else ""
    lines.append(f"diagnostic {label}{shape}: mean {_num(s.get('mean'))} ± sd {_num(s.get('sd'))} "
                 f"[min {_num(s.get('min'))}, max {_num(s.get('max'))}] over {s.get('num_seeds')} seeds{bad}")
  return lines
