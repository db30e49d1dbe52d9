"""Many-model evaluations: model bootstrap of F vs the plain metric, U-LiRA and KLOM at scale.

Command (CPU; the full run is several minutes on a loaded 2-core CPU)::

  python benchmarks/bench_evaluations.py            # B = 200, 144 examples; 5,000 for U-LiRA / KLOM
  python benchmarks/bench_evaluations.py --quick    # B = 16, 1,000 examples
  python benchmarks/bench_evaluations.py --full-draws 40 --bootstrap-only  # + the per-cell count, 40 draws

Inputs: N = 512 unlearned ~ normal(0.3, 1.1) and 512 retrained ~ normal(0, 1)
confidences. Rows:

* plain metric on the forget examples (steady state) and the model bootstrap with B
  draws on the same arrays; "per draw" is the bootstrap's time / B, and the ratio is
  per draw / plain (the bar: B = 200 draws at most 10 plain evaluations, 0.05 per draw).
  CPU seconds (process time) are the trustworthy column on a shared machine; wall seconds
  are reported beside them. ``--full-draws D`` also times ``method="full"`` (every
  attack counted, the metric's kernel per draw) on D draws (seed 0, as the bounded ones), one call
  (compilation included), for the before/after comparison in one sitting.
* U-LiRA (K = 2) and KLOM over 512 + 512 models x ``--examples``: steady-state time
  (the goal: under 5 s on a CPU) and the first call (compile included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._timing import device_description, print_table, record  # noqa: E402
from unlearn_jax.metrics import forgetting_metric, interval, klom, model_bootstrap, ulira  # noqa: E402


def _inputs(n: int, e: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  retrained = rng.normal(0.0, 1.0, size=(n, e))
  unlearned = rng.normal(0.3, 1.1, size=(n, e))
  return unlearned, retrained


def _timed(fn, repeats: int) -> tuple[object, float, float, float]:
  """``(result, first call wall s, steady CPU s, steady wall s)``; steady values are medians."""
  t0 = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t0
  cpu, wall = [], []
  for _ in range(repeats):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    cpu.append(time.process_time() - c0)
    wall.append(time.perf_counter() - t0)
  return out, first, float(np.median(cpu)), float(np.median(wall))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="B = 16 and 1,000 examples")
  parser.add_argument("--num-models", type=int, default=512)
  parser.add_argument("--forget-examples", type=int, default=144)
  parser.add_argument("--draws", type=int, default=None, help="bootstrap draws (default 200, quick 16)")
  parser.add_argument("--full-draws", type=int, default=0, help="also time method='full' on this many draws")
  parser.add_argument("--bootstrap-only", action="store_true", help="skip U-LiRA and KLOM")
  parser.add_argument("--examples", type=int, default=None,
                      help="examples for U-LiRA and KLOM (default 5000, quick 1000)")
  args = parser.parse_args(argv)
  n, e_f = args.num_models, args.forget_examples
  draws = args.draws or (16 if args.quick else 200)
  e_big = args.examples or (1000 if args.quick else 5000)
  rows, results = [], {}

  u, r = _inputs(n, e_f, seed=0)
  plain, p_first, p_cpu, p_wall = _timed(lambda: forgetting_metric(u, r), repeats=3)
  boot, b_first, b_cpu, b_wall = _timed(lambda: model_bootstrap(u, r, num_draws=draws), repeats=1)
  lo, hi = interval(boot.forgetting_quality)
  ratio = b_cpu / draws / p_cpu
  rows.append([f"plain metric {n} x {e_f}", f"{p_cpu:.2f}", f"{p_wall:.2f}", f"{p_first:.1f}",
               f"F = {plain.forgetting_quality:.4f}"])
  rows.append([f"model bootstrap B = {draws}", f"{b_cpu:.1f}", f"{b_wall:.1f}", f"{b_first:.1f}",
               f"95% interval [{lo:.4f}, {hi:.4f}], mean {boot.forgetting_quality.mean():.4f}"])
  rows.append(["bootstrap per draw / plain", f"{ratio:.3f}", f"{b_wall / draws / p_wall:.3f}", "",
               "CPU and wall ratios"])
  results.update(plain_cpu_s=p_cpu, plain_wall_s=p_wall, bootstrap_cpu_s=b_cpu, bootstrap_wall_s=b_wall,
                 per_draw_cpu_ratio=ratio, per_draw_wall_ratio=b_wall / draws / p_wall,
                 forgetting_quality=plain.forgetting_quality, interval=[lo, hi])
  if args.full_draws:
    d = args.full_draws
    c0, t0 = time.process_time(), time.perf_counter()
    full = model_bootstrap(u, r, num_draws=d, method="full")
    f_cpu, f_wall = time.process_time() - c0, time.perf_counter() - t0
    if not np.array_equal(full.forgetting_quality, model_bootstrap(u, r, num_draws=d).forgetting_quality):
      raise RuntimeError("method='full' and the bounded bootstrap disagree")
    rows.append([f"full count B = {d} (one call)", f"{f_cpu:.1f}", f"{f_wall:.1f}", "",
                 f"per draw / plain {f_cpu / d / p_cpu:.3f} CPU; every draw's F equal to the bounded one's"])
    results.update(full_draws=d, full_cpu_s=f_cpu, full_wall_s=f_wall, full_per_draw_cpu_ratio=f_cpu / d / p_cpu)
  if args.bootstrap_only:
    print(f"device: {device_description()}")
    print_table(["computation", "CPU s", "wall s", "first call s", "note"], rows)
    record("evaluations", {"num_models": n, "forget_examples": e_f, "draws": draws, "full_draws": args.full_draws,
                           "bootstrap_only": True}, results)
    return 0

  ub, rb = _inputs(n, e_big, seed=1)
  for name, fn in (("ulira", lambda: ulira(ub, rb)), ("klom", lambda: klom(ub, rb))):
    _, first, cpu, wall = _timed(fn, repeats=2)
    rows.append([f"{name} {n} + {n} x {e_big}", f"{cpu:.2f}", f"{wall:.2f}", f"{first:.1f}", ""])
    results[f"{name}_cpu_s"], results[f"{name}_wall_s"], results[f"{name}_first_s"] = cpu, wall, first

  print(f"device: {device_description()}")
  print_table(["computation", "CPU s", "wall s", "first call s", "note"], rows)
  record("evaluations", {"num_models": n, "forget_examples": e_f, "draws": draws, "examples": e_big,
                         "quick": args.quick}, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
