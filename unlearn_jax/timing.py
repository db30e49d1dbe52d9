"""Wall time per stage of one evaluation, as ``results["wall_s"]`` records it.

The protocol's stages (``load``, ``original``, ``retrained``, ``margins``, ``unlearn``,
``metric``) are timed where they run; the stages added after it (``evaluations`` for
U-LiRA / KLOM, ``bootstrap``, ``ceiling``) are timed by :func:`stage`, which also prints
a start and a ``done in`` progress line and adds its time to ``total``. ``total`` is the
wall time of the whole evaluation, never less than the sum of the stages it lists.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Mapping, MutableMapping, Optional

TOTAL = "total"


@contextlib.contextmanager
def stage(results: MutableMapping[str, Any], name: str, progress=None, start: Optional[str] = None) -> Iterator[None]:
  """Times the ``with`` block as stage ``name`` of ``results["wall_s"]`` (and adds it to ``total``).

  ``progress`` (a :class:`~unlearn_jax.pipeline.Progress`) gets ``[name] start`` before and
  ``[name] done in X s`` after; a block that raises records nothing.
  """
  if progress is not None and start:
    progress.line(f"[{name}] {start}")
  t0 = time.perf_counter()
  yield
  elapsed = time.perf_counter() - t0
  walls = results.setdefault("wall_s", {})
  walls[name] = walls.get(name, 0.0) + elapsed
  walls[TOTAL] = walls.get(TOTAL, 0.0) + elapsed
  if progress is not None:
    progress.line(f"[{name}] done in {elapsed:.1f} s")


def breakdown(walls: Mapping[str, Any]) -> str:
  """``12.3 s (load 1.0, original 0.4, retrained 6.1, unlearn 4.2, metric 0.3, bootstrap 0.3)``."""
  total = walls.get(TOTAL)
  parts = ", ".join(f"{k} {float(v):.1f}" for k, v in walls.items() if k != TOTAL and isinstance(v, (int, float)))
  head = f"{float(total):.1f} s" if isinstance(total, (int, float)) else "?"
  return f"{head} ({parts})" if parts else head
