"""What a long run will cost, said early, and a time budget it must fit (``--max-hours``).

Once the first chunk of models of a stage has run, :class:`Budget` knows what one model
costs on this machine: the chunk's wall time minus the time JAX spent tracing and
compiling during it (measured through ``jax.monitoring``'s compile-duration events, so
the first chunk's compilation does not inflate the estimate). It then prints one line
with the stage's remaining time and the run's estimated total (the time spent so far
plus the stage's remaining models at the measured rate) when that remainder is a minute
or more or a budget is set, and, with a budget of
``max_hours``, stops the run with a one-line :class:`BudgetExceeded` when that total is
over the budget, before the rest is spent. The estimate is refreshed after every chunk,
so a stage that slows down is refused as soon as its total passes the budget. A model
bootstrap does the same per block of (example, draw) pairs (:func:`pairs`). A sweep
does the same per grid point (:meth:`Budget.after_point`): after its first computed
point it states the sweep's estimated total and refuses one that will not fit.

The original model is one run, not a population: it is trained one epoch at a time (one
compiled program called once per epoch), so its first epoch is its first chunk and the
stage states and checks ``epochs - 1`` more epochs at the measured rate (``unit="epoch"``).

Before the unlearning stage starts, :meth:`Budget.forecast` turns the method's declared
cost relative to retraining (``UnlearningMethod.cost`` in retain epochs over the recipe's
epochs) and the retrained stage's measured time per model into the stage's cost, so a
method set to run for far too long (``--hp epochs=200000000``) is refused before its
first chunk, which would otherwise be one program running past any budget.

Nothing half-written remains: the check runs between chunks, after the finished chunk
was saved atomically, and the results files are written only at the end of a run, so a
refused run leaves only complete cache entries (which the same command reuses when it
runs again with a larger budget).

Use: ``budget.attach(progress, max_hours)`` on the :class:`~unlearn_jax.results.progress.Progress`
the run reports to; the chunk loop calls :func:`stage` once and
:meth:`StageBudget.after_chunk` after each chunk it computed.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Optional

MAX_HOURS_LIMIT = 24.0 * 365  # a budget beyond a year is a typo
LONG_S = 60.0  # without a budget, the estimate is printed when the rest of a stage (or sweep) takes this long
_COMPILE_EVENTS = ("/jax/core/compile/",)


class BudgetExceeded(ValueError):
  """A run whose estimated time exceeds ``--max-hours`` (a user-facing one-line error)."""


# ------------------------------------------------------------------ compile time


_lock = threading.Lock()
_compile_s = 0.0
_listening = False


def _on_duration(name: str, seconds: float, **_: Any) -> None:
  global _compile_s
  if name.startswith(_COMPILE_EVENTS):
    with _lock:
      _compile_s += float(seconds)


def compile_seconds() -> float:
  """Seconds JAX has spent tracing, lowering and compiling in this process since the first call."""
  global _listening
  with _lock:
    if not _listening:
      import jax.monitoring
      jax.monitoring.register_event_duration_secs_listener(_on_duration)
      _listening = True
    return _compile_s


# ------------------------------------------------------------------ the budget


def check_max_hours(value: Any) -> Optional[float]:
  """``value`` (``None``: no budget) as hours, or a one-line ``ValueError``: a finite number in (0, 8760]."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
      or not 0 < value <= MAX_HOURS_LIMIT:
    raise ValueError(f"--max-hours must be a number of hours in (0, {MAX_HOURS_LIMIT:g}], got {value!r}")
  return float(value)


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 5400:
    return f"{seconds / 60:.1f} min"
  if seconds < 48 * 3600:
    return f"{seconds / 3600:.1f} h"
  return f"{seconds / 86400:.1f} days"


class Budget:
  """The run's clock, its optional limit and where its lines go.

  Args:
    max_hours: the budget (``None``: estimates only, nothing refused).
    log: where the estimate lines go (e.g. ``Progress.line``).
    clock: seconds, monotonic (tests pass a fake one).
    compile_clock: seconds of compilation so far (tests pass a fake one).
  """

  def __init__(self, max_hours: Optional[float] = None, log: Optional[Callable[[str], None]] = None,
               clock: Callable[[], float] = time.monotonic, compile_clock: Callable[[], float] = compile_seconds):
    self.max_hours = check_max_hours(max_hours)
    self.log = log or (lambda line: None)
    self.clock = clock
    self.compile_clock = compile_clock
    self.start = clock()
    compile_clock()  # starts listening before the first program compiles
    self._points: Optional[dict[str, Any]] = None
    self.per_model: dict[str, float] = {}  # stage -> measured seconds per model (compilation excluded)

  @property
  def limit_s(self) -> Optional[float]:
    return None if self.max_hours is None else self.max_hours * 3600.0

  def elapsed(self) -> float:
    return self.clock() - self.start

  def check(self, estimate_total_s: float, what: str) -> None:
    """Raises :class:`BudgetExceeded` when ``estimate_total_s`` exceeds the budget; ``what`` explains the estimate."""
    if self.limit_s is not None and estimate_total_s > self.limit_s:
      raise BudgetExceeded(f"this run would take about {_duration(estimate_total_s)} ({what}), over --max-hours "
                           f"{self.max_hours:g}; stopped after {_duration(self.elapsed())} with every finished chunk "
                           f"saved (the same command with a larger --max-hours continues from them)")

  def forecast(self, stage: str, num_models: int, relative_to: str, ratio: float) -> None:
    """Before stage ``stage`` of ``num_models`` models starts: its cost as ``ratio`` times the measured
    per-model time of stage ``relative_to`` (e.g. an unlearning method's cost relative to retraining).
    States it and checks the budget; nothing happens when ``relative_to`` was not measured in this run."""
    base = self.per_model.get(relative_to)
    if base is None or not math.isfinite(float(ratio)) or ratio < 0:
      return
    ahead = num_models * base * float(ratio)
    total = self.elapsed() + ahead
    if self.max_hours is not None or ahead >= LONG_S:
      self.log(f"[budget] {stage}: about {_duration(ahead)} for {num_models} model(s) ({float(ratio):.3g} x the "
               f"{relative_to} time of {base:.3g} s per model); estimated total {_duration(total)}"
               + self._of_budget())
    self.check(total, f"stage {stage}: {num_models} model(s) at {float(ratio):.3g} x {base:.3g} s, before it starts")

  # ---------------------------------------------------------------- sweeps

  def start_points(self, total: int) -> None:
    """A sweep of ``total`` points begins (call once, before the first point)."""
    self._points = dict(total=int(total), done=0, computed=0, spent=0.0, said=False, t=self.clock())

  def after_point(self, reused: bool) -> None:
    """One point finished (``reused``: read back from an earlier run, nearly free); states and checks the total."""
    p = self._points
    if p is None:
      return
    now = self.clock()
    p["done"] += 1
    if not reused:
      p["computed"] += 1
      p["spent"] += now - p["t"]
    p["t"] = now
    left = p["total"] - p["done"]
    if not p["computed"] or not left:
      return
    per_point = p["spent"] / p["computed"]
    total = self.elapsed() + left * per_point
    if not p["said"]:
      p["said"] = True
      if self.max_hours is not None or left * per_point >= LONG_S:
          self.log(f"[budget] sweep: {_duration(per_point)} per point measured; {left} point(s) left, about "
                 f"{_duration(left * per_point)} more; estimated total {_duration(total)}" + self._of_budget())
    self.check(total, f"{left} more sweep point(s) at {_duration(per_point)} each, measured on "
                      f"{p['computed']} point(s)")

  def _of_budget(self) -> str:
    return "" if self.max_hours is None else f" (budget {self.max_hours:g} h)"


class StageBudget:
  """One pass of a chunked stage: turns each computed chunk into a rate, an estimate and a check.

  ``unit``: what the stage counts, ``model`` (its seeds) or ``epoch`` (the original model, trained one
  epoch at a time: its first epoch is the first chunk).
  """

  def __init__(self, budget: Optional[Budget], stage: str, total: int, unit: str = "model"):
    self.budget, self.stage, self.total, self.unit = budget, stage, int(total), unit
    if budget is not None:
      self.t0, self.c0 = budget.clock(), budget.compile_clock()
    self.said = False

  def after_chunk(self, done: int, computed: int) -> None:
    """``done`` of ``total`` models are ready, ``computed`` of them by this pass; may raise :class:`BudgetExceeded`."""
    b = self.budget
    if b is None or computed <= 0:
      return
    wall = b.clock() - self.t0
    compiling = max(0.0, b.compile_clock() - self.c0)
    per_model = max(wall - compiling, 0.0) / computed
    unit = self.unit
    if unit == "model":
      b.per_model[self.stage] = per_model
    left = max(self.total - done, 0)
    if not left:
      return
    remaining = left * per_model
    total = b.elapsed() + remaining
    if not self.said:
      self.said = True
      if b.max_hours is not None or remaining >= LONG_S:
        b.log(f"[budget] {self.stage}: {per_model:.3g} s per {unit} measured ({computed} {unit}(s), "
              f"{compiling:.1f} s of compilation excluded); {left} left, about {_duration(remaining)} more; "
              f"run so far {_duration(b.elapsed())}, estimated total {_duration(total)}" + b._of_budget())
    b.check(total, f"stage {self.stage}: {left} more {unit}(s) at {per_model:.3g} s each")


def attach(progress: Any, max_hours: Optional[float] = None) -> Budget:
  """Gives ``progress`` (a :class:`~unlearn_jax.results.progress.Progress`) a :class:`Budget` that logs through it."""
  b = Budget(max_hours, log=getattr(progress, "line", None))
  progress.budget = b
  return b


def stage(progress: Any, name: str, total: int, unit: str = "model") -> StageBudget:
  """The :class:`StageBudget` of one pass of stage ``name`` (inactive when ``progress`` has no budget)."""
  return StageBudget(getattr(progress, "budget", None), name, total, unit)


def forecast(progress: Any, stage: str, num_models: int, relative_to: str, ratio: float) -> None:
  """:meth:`Budget.forecast` of the budget attached to ``progress`` (nothing without one)."""
  b = getattr(progress, "budget", None)
  if b is not None:
    b.forecast(stage, num_models, relative_to, ratio)


def pairs(progress: Any, stage: str) -> Optional[Callable[[int, int], None]]:
  """A model bootstrap's ``progress(done, total)`` callback (``done`` of ``total`` (example, draw) pairs, after
  each block) that, from the first block on, states the remaining time at the measured rate (compilation
  excluded) and refuses past ``--max-hours``: a :class:`StageBudget` in pairs. ``None`` without a budget.
  Call it right before the bootstrap starts: its clock starts here."""
  b = getattr(progress, "budget", None)
  if b is None:
    return None
  cost = StageBudget(b, stage, 0, unit="pair")

  def after_block(done: int, total: int) -> None:
    cost.total = int(total)
    cost.after_chunk(int(done), int(done))

  return after_block


def sweep_of(progress: Any) -> Optional[Budget]:
  """The budget attached to ``progress``, if any (sweeps call :meth:`Budget.start_points` / ``after_point``)."""
  return getattr(progress, "budget", None)
