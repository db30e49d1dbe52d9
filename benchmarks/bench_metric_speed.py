"""Forgetting-quality metric speed: the jitted kernel vs the brute-force NumPy oracle.

Command (CPU, well under a minute)::

  python benchmarks/bench_metric_speed.py --quick

Full run (adds the 512 x 512 x 5,000 scoring time; about a minute on a 2-core CPU)::

  python benchmarks/bench_metric_speed.py

Old kernel beside the current one (both timed in this process, interleaved, on the
same inputs; the old module is read from the repository's own git history)::

  python benchmarks/bench_metric_speed.py --quick --baseline-rev main

Both paths see the same inputs in the same process: N = 512 unlearned and 512
retrained models, confidences drawn as retrained ~ normal(0, 1), unlearned ~
normal(0.3, 1.1). The oracle (:mod:`unlearn_jax.metrics.reference`, every threshold
against every model, one example at a time) is timed on a few examples; the fast path
on ``--examples`` (steady state, compile time reported apart). Expected: the fast path
a few ms per example and >1000x the oracle; epsilons identical on the shared examples.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._timing import device_description, print_table, record, time_fn  # noqa: E402
from unlearn_jax.metrics import forgetting_metric  # noqa: E402
from unlearn_jax.metrics.reference import reference_example  # noqa: E402


def _inputs(n: int, e: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  retrained = rng.normal(0.0, 1.0, size=(n, e))
  unlearned = rng.normal(0.3, 1.1, size=(n, e))
  return unlearned, retrained


def _baseline_module(rev: str):
  """``unlearn_jax/metrics/privacy.py`` as of git revision ``rev`` of this repository, imported under another name."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  source = subprocess.run(["git", "show", f"{rev}:unlearn_jax/metrics/privacy.py"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "baseline_privacy.py")
    with open(path, "w") as f:
      f.write(source)
    spec = importlib.util.spec_from_file_location("baseline_privacy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_privacy"] = module
    spec.loader.exec_module(module)
  return module


def _side_by_side(baseline, u, r, chunk_size: int, repeats: int) -> dict[str, float]:
  """CPU and wall seconds per example of the baseline and current kernels, interleaved; epsilons compared."""
  e = u.shape[1]
  paths = {"baseline": baseline.forgetting_metric, "current": forgetting_metric}
  eps = {k: f(u, r, chunk_size=chunk_size).epsilons for k, f in paths.items()}  # compile both
  cpu = {k: [] for k in paths}
  wall = {k: [] for k in paths}
  for _ in range(repeats):
    for k, f in paths.items():
      c0, t0 = time.process_time(), time.perf_counter()
      f(u, r, chunk_size=chunk_size)
      cpu[k].append((time.process_time() - c0) / e)
      wall[k].append((time.perf_counter() - t0) / e)
  med = lambda v: float(np.median(v))
  return {"baseline_cpu_ms": med(cpu["baseline"]) * 1e3, "current_cpu_ms": med(cpu["current"]) * 1e3,
          "baseline_wall_ms": med(wall["baseline"]) * 1e3, "current_wall_ms": med(wall["current"]) * 1e3,
          "cpu_ratio": med(cpu["current"]) / med(cpu["baseline"]),
          "epsilons_equal": bool(np.array_equal(eps["baseline"], eps["current"]))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes; skips the 5,000-example scoring")
  parser.add_argument("--num-models", type=int, default=512)
  parser.add_argument("--examples", type=int, default=None, help="examples for the fast path (default 128, quick 64)")
  parser.add_argument("--reference-examples", type=int, default=None, help="examples for the oracle (default 4, quick 2)")
  parser.add_argument("--score-examples", type=int, default=5000, help="examples of the full scoring run")
  parser.add_argument("--chunk-size", type=int, default=4)
  parser.add_argument("--baseline-rev", default=None,
                      help="also time privacy.py of this git revision beside the current one (e.g. main)")
  parser.add_argument("--baseline-repeats", type=int, default=5)
  args = parser.parse_args(argv)
  n = args.num_models
  e_fast = args.examples or (64 if args.quick else 128)
  e_ref = args.reference_examples or (2 if args.quick else 4)
  u, r = _inputs(n, max(e_fast, e_ref))

  fast = lambda: forgetting_metric(u[:, :e_fast], r[:, :e_fast], chunk_size=args.chunk_size).epsilons
  t_fast = time_fn(fast, repeats=2 if args.quick else 3)
  cpu0 = time.process_time()
  eps_fast = fast()
  cpu_fast = (time.process_time() - cpu0) / e_fast

  t0 = time.perf_counter()
  eps_ref = [reference_example(u[:, s], r[:, s])["epsilon"] for s in range(e_ref)]
  t_ref = (time.perf_counter() - t0) / e_ref
  agree = bool(np.array_equal(np.asarray(eps_ref), eps_fast[:e_ref]))

  per_fast = t_fast["median_s"] / e_fast
  rows = [
      ["fast (jit, lattice counts)", n, e_fast, f"{per_fast * 1e3:.2f}", f"{cpu_fast * 1e3:.2f}",
       f"{t_fast['first_s']:.1f}", ""],
      ["naive reference (NumPy)", n, e_ref, f"{t_ref * 1e3:.1f}", "", "", ""],
      ["speed-up", "", "", f"{t_ref / per_fast:.0f}x", "", "", f"eps equal: {agree}"],
  ]
  results = {"fast_ms_per_example": per_fast * 1e3, "fast_cpu_ms_per_example": cpu_fast * 1e3,
             "fast_first_call_s": t_fast["first_s"], "reference_ms_per_example": t_ref * 1e3,
             "speedup": t_ref / per_fast, "epsilons_equal": agree}

  if not args.quick:
    us, rs = _inputs(n, args.score_examples, seed=1)
    t_score = time_fn(lambda: forgetting_metric(us, rs, chunk_size=args.chunk_size).forgetting_quality, repeats=1)
    rows.append([f"score {n} x {n} x {args.score_examples}", n, args.score_examples,
                 f"{t_score['median_s'] / args.score_examples * 1e3:.2f}", "", f"{t_score['first_s']:.1f}",
                 f"total {t_score['median_s']:.1f} s"])
    results["score_total_s"] = t_score["median_s"]
    results["score_examples"] = args.score_examples

  if args.baseline_rev:
    cmp = _side_by_side(_baseline_module(args.baseline_rev), u[:, :e_fast], r[:, :e_fast], args.chunk_size,
                        args.baseline_repeats)
    rows.append([f"baseline kernel ({args.baseline_rev})", n, e_fast, f"{cmp['baseline_wall_ms']:.2f}",
                 f"{cmp['baseline_cpu_ms']:.2f}", "", ""])
    rows.append(["current kernel (same run)", n, e_fast, f"{cmp['current_wall_ms']:.2f}", f"{cmp['current_cpu_ms']:.2f}",
                 "", f"CPU ratio {cmp['cpu_ratio']:.3f}; eps equal: {cmp['epsilons_equal']}"])
    results["baseline"] = dict(cmp, rev=args.baseline_rev)
    agree = agree and cmp["epsilons_equal"]

  print(f"device: {device_description()}")
  print_table(["path", "N", "examples", "ms / example (wall)", "CPU ms / example", "first call s", "note"], rows)
  record("metric_speed", {"num_models": n, "examples": e_fast, "reference_examples": e_ref,
                          "chunk_size": args.chunk_size, "quick": args.quick, "baseline_rev": args.baseline_rev},
         results)
  return 0 if agree else 1


if __name__ == "__main__":
  sys.exit(main())
