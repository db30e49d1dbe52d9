"""Level and power of ``compare`` by simulation, against known data-generating processes.

Command (CPU; run it with ``nice``, it is CPU-bound)::

  python benchmarks/sim_statistics.py                          # 200 datasets per null cell, 100 per power cell
  python benchmarks/sim_statistics.py --reps 40 --power-reps 20  # a quick look
  python benchmarks/sim_statistics.py --sizes 256 --seed 2       # one size (run sizes side by side)
  python benchmarks/sim_statistics.py --sizes 16 --cells "power shift 1.0" --permutations 99   # one cell
  python benchmarks/sim_statistics.py --time 64,144 --permutations 99   # the cost of one compare verdict

Processes, per forget example e (E = ``--examples``): mu_e ~ Normal(0, 1); retrained
confidences Normal(mu_e, 1); unlearned confidences of model j Normal(mu_e + delta + o_j, s),
o_j a per-model offset shared by all examples of that model (Normal(0, tau)):

* ``null iid``: A and B both delta = 0, s = 1, tau = 0 (identical i.i.d. populations);
* ``null model effect``: A and B both delta = 0, s = 1, tau = 0.5 (independent offsets);
* ``power shift 1.0``: A as the i.i.d. null, B delta = 1.0.

Each dataset draws fresh populations of N models for A, B and one retrained population
shared by both (the same setup). Reported per cell: the rejection rate at a nominal 5% of

* ``permutation`` (:func:`unlearn_jax.metrics.paired.model_permutation_test`, ``compare``'s
  verdict: P random splits of the pooled 2N unlearned models, ``--permutations``, default 19
  here to fit the CPU budget; the test is exact at any P, a larger P gains power),
* ``model groups`` (:func:`unlearn_jax.metrics.paired.model_groups_test`, the previous verdict,
  ``compare --test groups``), and
* ``examples`` (the test before that: paired bootstrap over examples of the full-N points,
  rejecting when its 95% interval excludes 0),

each with its Monte-Carlo standard error ``sqrt(p (1 - p) / reps)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unlearn_jax.metrics import forgetting_metric  # noqa: E402
from unlearn_jax.metrics.paired import default_groups, group_qualities, model_permutation_test  # noqa: E402

CELLS = {
    "null iid": (0.0, 0.0, 0.0),  # (delta_b, tau, shift of B) -- A is always delta 0
    "null model effect": (0.0, 0.5, 0.0),
    "power shift 1.0": (1.0, 0.0, 0.0),
}


def draw(rng, n, e, delta, tau):
  mu = rng.normal(size=e)
  retrained = mu + rng.normal(size=(n, e))

  def unlearned(d):
    return mu + d + rng.normal(0.0, tau, size=(n, 1)) * (tau > 0) + rng.normal(size=(n, e))

  return unlearned(0.0), unlearned(delta), retrained


def one_cell(rng, n, e, reps, delta, tau, permutations, draws=1000):
  """Rejection rates of the permutation test, the model-groups test and the example bootstrap over ``reps`` datasets."""
  from scipy import stats
  k = default_groups(n)
  size = n // k
  crit = stats.t.ppf(0.975, k - 1)
  data = [draw(rng, n, e, delta, tau) for _ in range(reps)]
  groups = [np.sort(rng.permutation(n)[:k * size].reshape(k, size), axis=1) for _ in range(reps)]
  # One metric call per method for all datasets' full-N points, one per dataset for the groups.
  ua = np.concatenate([d[0] for d in data], 1)
  ub = np.concatenate([d[1] for d in data], 1)
  r = np.concatenate([d[2] for d in data], 1)
  pa = forgetting_metric(ua, r).points.reshape(reps, e)
  pb = forgetting_metric(ub, r).points.reshape(reps, e)
  rej_model = np.zeros(reps, bool)
  rej_example = np.zeros(reps, bool)
  rej_perm = np.zeros(reps, bool)
  # [2, K] group qualities of every dataset from one metric call: datasets side by side as examples
  ga = np.concatenate([d[0][g] for d, g in zip(data, groups)], 2)  # [K, n, reps * E]
  gb = np.concatenate([d[1][g] for d, g in zip(data, groups)], 2)
  gr = np.concatenate([d[2][g] for d, g in zip(data, groups)], 2)
  lay = lambda x: x.transpose(1, 0, 2).reshape(size, -1)  # [n, K * reps * E]
  pts = forgetting_metric(np.concatenate([lay(ga), lay(gb)], 1), np.concatenate([lay(gr), lay(gr)], 1)).points
  q_every = pts.reshape(2, k, reps, e).mean(axis=3)  # [2, K, reps]
  # the batched layout scores what model_groups_test scores (checked on the first dataset)
  np.testing.assert_allclose(q_every[:, :, 0], group_qualities(data[0][0], data[0][2], data[0][1], data[0][2],
                                                                groups[0]), rtol=0, atol=1e-12)
  for i in range(reps):
    dk = q_every[0, :, i] - q_every[1, :, i]
    sd = dk.std(ddof=1)
    rej_model[i] = (abs(dk.mean()) > crit * sd / np.sqrt(k)) if sd > 0 else dk.mean() != 0
    diff = pa[i] - pb[i]
    means = diff[rng.integers(0, e, (draws, e))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    rej_example[i] = not (lo <= 0.0 <= hi)
    a, b, r = data[i]
    out = model_permutation_test(a, r, b, r, permutations=permutations, seed=int(rng.integers(1 << 30)))
    assert abs(out["mean_difference"] - diff.mean()) < 1e-12  # the observed split is A against B at full N
    rej_perm[i] = out["p_value"] <= 0.05
  return rej_perm.mean(), rej_model.mean(), rej_example.mean(), k, size


def time_one_test(rng, n, e, permutations) -> None:
  """CPU and wall seconds of one :func:`model_permutation_test` call (after a first call that compiles)."""
  a, b, r = draw(rng, n, e, 0.3, 0.0)
  model_permutation_test(a, r, b, r, permutations=19)
  t0, w0 = time.process_time(), time.time()
  out = model_permutation_test(a, r, b, r, permutations=permutations)
  print(f"N = {n}, E = {e}, P = {permutations} ({2 * e * (permutations + 1):,} metric columns): "
        f"{time.process_time() - t0:.1f} CPU s, {time.time() - w0:.1f} s wall, load {os.getloadavg()[0]:.1f}, "
        f"p = {out['p_value']:.3g}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=200, help="datasets per null cell")
  parser.add_argument("--power-reps", type=int, default=100, help="datasets per power cell")
  parser.add_argument("--permutations", type=int, default=19, help="random splits P of the permutation test")
  parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells to run (default: all)")
  parser.add_argument("--examples", type=int, default=10)
  parser.add_argument("--sizes", default="16,64,256")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--time", default=None, metavar="N,E",
                      help="instead: time one permutation test of N models x E examples at --permutations")
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  if args.time:
    time_one_test(rng, *(int(v) for v in args.time.split(",")), args.permutations)
    return
  sizes = [int(s) for s in args.sizes.split(",")]
  print(f"E = {args.examples} examples, P = {args.permutations} permutations; rejection rate at nominal 5% "
        f"+- Monte-Carlo s.e.; CPU seconds per cell")
  print("| process | N | K x n | reps | permutation (compare) | model groups (--test groups) | examples (before) "
        "| CPU s |")
  print("|---|---|---|---|---|---|---|---|")
  for n in sizes:
    for name in args.cells.split(","):
      delta, tau, _ = CELLS[name]
      reps = args.power_reps if delta else args.reps
      t0 = time.process_time()
      pp, pm, pe, k, size = one_cell(rng, n, args.examples, reps, delta, tau, args.permutations)
      se = lambda p: np.sqrt(p * (1 - p) / reps)
      print(f"| {name} | {n} | {k} x {size} | {reps} | {pp:.3f} +- {se(pp):.3f} | {pm:.3f} +- {se(pm):.3f} | "
            f"{pe:.3f} +- {se(pe):.3f} | {time.process_time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
  main()
