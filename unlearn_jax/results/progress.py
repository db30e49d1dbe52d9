"""Progress lines of a run on stderr: one per stage event, per-chunk rates and ETAs.

:class:`Progress` is handed down to every stage (and to the strategy tuner); nothing
else in the library prints.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, TextIO


class Progress:
  """Per-chunk progress lines on ``stream``: models done, models/s, ETA.

  The first chunk a stage computes includes compiling its program, so the rate and
  the ETA come only from the chunks after it (no ETA until one has run). Lines of a
  stage are printed at most every ``interval_s`` seconds of ``clock``; its first
  computed chunk and its last chunk are always printed.
  """

  def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True, interval_s: float = 5.0,
               clock: Callable[[], float] = time.monotonic):
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = enabled
    self.interval_s = interval_s
    self.clock = clock
    self._stages: dict[str, dict[str, Any]] = {}

  def line(self, text: str) -> None:
    if self.enabled:
      print(text, file=self.stream, flush=True)

  def count(self, stage: str, done: int, total: int, unit: str) -> None:
    """After a block of work: ``done`` of ``total`` ``unit`` finished. The first and the last block of a
    pass are always printed, the blocks between at most every ``interval_s`` seconds of ``clock``; the
    ETA comes from the blocks after the first (which includes compiling)."""
    state = self._stages.get(stage)
    now = self.clock()
    if state is None or done <= state["done"]:  # a new pass over the stage
      state = self._stages[stage] = dict(first=(done, now), done=done, printed=now)
      self.line(f"[{stage}] {unit} {done}/{total}")
      return
    state["done"] = done
    if done < total and now - state["printed"] < self.interval_s:
      return
    state["printed"] = now
    d0, t0 = state["first"]
    rate = (done - d0) / (now - t0) if now > t0 else float("nan")
    eta = f"{(total - done) / rate:.0f} s" if rate == rate and rate > 0 else "?"
    self.line(f"[{stage}] {unit} {done}/{total}  ETA {eta}")

  def chunk(self, stage: str, done: int, total: int, computed: int, elapsed: float) -> None:
    """After a chunk: ``done`` of ``total`` models ready, ``computed`` of them in ``elapsed`` s by this run."""
    state = self._stages.get(stage)
    if state is None or computed <= state["computed"]:  # a new pass over the stage (or a retry)
      state = self._stages[stage] = dict(first=(computed, elapsed), computed=0, printed=None)
    state["computed"] = computed
    c0, e0 = state["first"]
    now = self.clock()
    final = done >= total
    if not final and state["printed"] is not None and now - state["printed"] < self.interval_s:
      return
    state["printed"] = now
    if computed == c0:
      self.line(f"[{stage}] models {done}/{total}  first chunk {elapsed:.1f} s (includes compilation)")
      return
    rate = (computed - c0) / (elapsed - e0) if elapsed > e0 else float("nan")
    eta = (total - done) / rate if rate == rate and rate > 0 else float("nan")
    eta_text = f"{eta:.0f} s" if eta == eta else "?"
    self.line(f"[{stage}] models {done}/{total}  {rate:.2f} models/s  ETA {eta_text}")
