"""Timing helpers shared by the benchmark scripts.

``time_fn`` separates the first call (trace + compile + run) from steady-state
calls, blocks until results are ready, and reports the median of repeats.
``record`` appends one JSON line per measurement with the device (described as
the evaluation describes it), the jax version and the configuration, to
``benchmarks/results.jsonl`` by default.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
from typing import Any, Callable

import jax

from unlearn_jax.results.record import device_description  # noqa: F401  (re-exported for the scripts)

RESULTS = os.path.join(os.path.dirname(__file__), "results.jsonl")


def time_fn(fn: Callable[[], Any], repeats: int = 3) -> dict[str, float]:
  """Returns ``{"first_s", "median_s", "min_s"}`` for ``fn()`` (results blocked on)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return {"first_s": first, "median_s": statistics.median(times), "min_s": min(times)}


def record(benchmark: str, config: dict, results: dict, path: str = RESULTS) -> None:
  """Appends one JSON line: benchmark name, date, device, jax version, config, results."""
  line = {
      "benchmark": benchmark,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "device": device_description(),
      "jax": jax.__version__,
      "config": config,
      "results": results,
  }
  with open(path, "a") as f:
    f.write(json.dumps(line) + "\n")


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
  """Prints a GitHub-markdown table."""
  cells = [[str(c) for c in row] for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
  fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
  print(fmt(headers))
  print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
  for row in cells:
    print(fmt(row))
