"""Wall time per stage of one evaluation, as ``results["wall_s"]`` records it, in one printed line.

Every stage (``load``, ``original``, ``retrained``, ``margins``, ``unlearn``, ``metric``,
``ceiling``, ``evaluations`` for U-LiRA / KLOM and the no-op check, ``bootstrap`` for the
intervals, ``write`` for ``populations.npz`` and the plots) is timed where it runs
(:mod:`unlearn_jax.protocol.run`); ``total`` is the wall time of the whole evaluation up to
writing ``results.json`` (which records it, so is written after it is taken), never less than
the sum of the stages it lists.
"""

from __future__ import annotations

from typing import Any, Mapping

TOTAL = "total"


def breakdown(walls: Mapping[str, Any]) -> str:
  """``12.3 s (load 1.0, original 0.4, retrained 6.1, unlearn 4.2, metric 0.3, bootstrap 0.3)``."""
  total = walls.get(TOTAL)
  parts = ", ".join(f"{k} {float(v):.1f}" for k, v in walls.items() if k != TOTAL and isinstance(v, (int, float)))
  head = f"{float(total):.1f} s" if isinstance(total, (int, float)) else "?"
  return f"{head} ({parts})" if parts else head
