"""A hyperparameter sweep against one shared reference vs one ``evaluate`` per point.

Both sides run as ``unlearn-jax`` subprocesses in the same invocation, each in a
fresh temporary cache: one ``sweep`` over the grid (the original and N retrained
models trained once) and one ``evaluate`` per grid point (each trains its own
original and retrained models, as separate runs on separate machines or caches
would). The bar: the sweep saves at least the retraining share of the extra
runs, i.e. ``t_separate - t_sweep >= (points - 1) x (original + retrained wall)``
measured in the separate runs' ``results.json``. On a shared machine the CPU
seconds (user + system) of the subprocesses are reported beside the wall times:
they depend less on what else runs.

Usage::

  python benchmarks/bench_sweep.py                       # 6 points of finetune at N = 128 on digits
  python benchmarks/bench_sweep.py --num-models 16 --grid lr=0.01,0.1 --grid epochs=1   # quick check
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _timing  # noqa: E402
from unlearn_jax import sweep  # noqa: E402


def _cpu_children() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _run(argv: list[str]) -> tuple[float, float]:
  """``(wall s, CPU s)`` of one ``unlearn-jax`` subprocess (CPU: user + system of the child)."""
  t0, c0 = time.perf_counter(), _cpu_children()
  proc = subprocess.run([sys.executable, "-m", "unlearn_jax.cli", *argv], capture_output=True, text=True)
  wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
  if proc.returncode != 0:
    raise SystemExit(f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
  return wall, cpu


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--method", default="finetune")
  p.add_argument("--grid", action="append", default=None, metavar="NAME=V1,V2,...")
  p.add_argument("--num-models", type=int, default=128)
  p.add_argument("--extra", default="", help="further flags for both sides, e.g. '--chunk-size 32'")
  p.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.jsonl")
  args = p.parse_args()
  grid_args = args.grid or ["lr=0.01,0.03,0.1", "epochs=1,3"]
  grid = sweep.parse_grid_args(grid_args)
  points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
  common = ["--method", args.method, "--num-models", str(args.num_models), "--no-plots", "--quiet",
            *args.extra.split()]
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    argv = ["sweep", *common, "--cache-dir", os.path.join(tmp, "sweep-cache"), "--output-dir",
            os.path.join(tmp, "sweep")]
    for g in grid_args:
      argv += ["--grid", g]
    t_sweep, cpu_sweep = _run(argv)
    t_each, cpu_each, shared = [], [], []
    for i, point in enumerate(points):
      out = os.path.join(tmp, f"eval-{i}")
      argv = ["evaluate", *common, "--cache-dir", os.path.join(tmp, f"eval-cache-{i}"), "--output-dir", out]
      for k, v in point.items():
        argv += ["--hp", f"{k}={v}"]
      wall, cpu = _run(argv)
      t_each.append(wall)
      cpu_each.append(cpu)
      with open(os.path.join(out, "results.json")) as f:
        walls = json.load(f)["wall_s"]
      shared.append(walls["original"] + walls["retrained"])
    with open(os.path.join(tmp, "sweep", "sweep.json")) as f:
      summary = json.load(f)
  load_after = os.getloadavg()
  t_separate = sum(t_each)
  bar = (len(points) - 1) * sum(shared) / len(shared)
  results = {"points": len(points), "sweep_s": t_sweep, "separate_s": t_separate, "separate_each_s": t_each,
             "sweep_cpu_s": cpu_sweep, "separate_cpu_s": sum(cpu_each), "separate_each_cpu_s": cpu_each,
             "retrain_share_s": shared, "saving_s": t_separate - t_sweep, "bar_saving_s": bar,
             "meets_bar": t_separate - t_sweep >= bar, "best": summary["best"],
             "load_avg_before": load_before[0], "load_avg_after": load_after[0]}
  config = {"method": args.method, "grid": grid_args, "num_models": args.num_models, "dataset": "digits",
            "extra": args.extra}
  _timing.print_table(["points", "N", "sweep s (CPU s)", f"{len(points)} x evaluate s (CPU s)", "saving s",
                       f"bar: {len(points) - 1} x retraining s", "meets bar"],
                      [[len(points), args.num_models, f"{t_sweep:.1f} ({cpu_sweep:.1f})",
                        f"{t_separate:.1f} ({sum(cpu_each):.1f})", f"{t_separate - t_sweep:.1f}", f"{bar:.1f}",
                        results["meets_bar"]]])
  print(f"device: {_timing.device_description()}; load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
  if not args.no_record:
    _timing.record("sweep", config, results)


if __name__ == "__main__":
  main()
