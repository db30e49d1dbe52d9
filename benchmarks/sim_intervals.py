"""Coverage and width of model intervals of F by simulation, against known data-generating processes.

Command (CPU; run it with ``nice``, it is CPU-bound)::

  python benchmarks/sim_intervals.py --sizes 16 --datasets 30     # one N per process
  python benchmarks/sim_intervals.py --sizes 16,64 --datasets 10  # a quick look

Processes, per forget example e (E = ``--examples``): retrained confidences Normal(mu_e, 1),
unlearned confidences Normal(mu_e + delta, s) (the threshold attacks do not depend on mu_e,
so mu_e = 0): ``identical`` (delta = 0, s = 1), ``shifted`` (delta = 2, s = 1) and ``scaled``
(delta = 0, s = 2).

The estimand is E[F] at N: the mean over fresh evaluations with N unlearned and N retrained
models. It and the true sd of F are estimated from ``--truth`` independent redraws of both
populations (laid side by side as examples: one metric call). Then ``--datasets`` datasets
per cell, each with the candidate 95% intervals:

* ``shifted percentile`` (the library's model interval before this comparison): the model
  bootstrap's (:func:`unlearn_jax.metrics.bootstrap.model_bootstrap`, B = ``--draws``)
  percentile interval shifted by its bias, ``[q_lo - b, q_hi - b]``, ``b = mean(draws) - F``;
* ``normal, bootstrap sd``: ``F +- 1.96 sd(draws)`` of the same draws;
* ``half-sampling``: ``--sub-draws`` subsamples of m = N / 2 models per population without
  replacement (no duplicated models), ``F +- 1.96 sqrt(m / (N - m)) sd(F_m)``. Every
  subsample has the same m, so the shift of E[F] with the number of models moves all of
  them alike and leaves their spread; ``sqrt(m / (N - m))`` is the subsampling rescaling
  (``sqrt(m / N)`` for the rate, ``1 / sqrt(1 - m / N)`` for drawing without replacement),
  1 at m = N / 2;
* ``grouped jackknife``: each population's models split at random into K = 8 groups; F
  without group k of both populations (``N - N / K`` models each), ``v = (K - 1) / K *
  sum_k (F_-k - mean)^2``, ``F +- t_{K-1, 0.975} sqrt(v)``.

Reported per cell and candidate: coverage of E[F] +- its Monte-Carlo s.e. ``sqrt(p (1 - p) /
datasets)``, the mean width over the ideal width ``2 * 1.96 * sd(F)`` (the true sd), and the
CPU seconds the candidate spent (the two bootstrap candidates share one set of draws; each is
charged all of it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unlearn_jax.metrics import forgetting_metric  # noqa: E402
from unlearn_jax.metrics.bootstrap import model_bootstrap  # noqa: E402

PROCESSES = {"identical": (0.0, 1.0), "shifted": (2.0, 1.0), "scaled": (0.0, 2.0)}  # (delta, s)
CANDIDATES = ("shifted percentile", "normal, bootstrap sd", "half-sampling", "grouped jackknife")
GROUPS = 8
Z = 1.959963984540054


def draw(rng, n, e, delta, s):
  """``(unlearned, retrained)`` ``[n, e]`` confidences of one dataset."""
  return rng.normal(delta, s, size=(n, e)), rng.normal(0.0, 1.0, size=(n, e))


def side_by_side(pairs):
  """F of each ``(unlearned, retrained)`` pair of equal shapes, from one metric call."""
  e = pairs[0][0].shape[1]
  points = forgetting_metric(np.concatenate([p[0] for p in pairs], 1), np.concatenate([p[1] for p in pairs], 1)).points
  return points.reshape(len(pairs), e).mean(axis=1)


def truth(rng, n, e, delta, s, redraws):
  """E[F] and sd(F) at N = n from ``redraws`` independent datasets."""
  f = side_by_side([draw(rng, n, e, delta, s) for _ in range(redraws)])
  return float(f.mean()), float(f.std(ddof=1))


def intervals(rng, u, r, draws, sub_draws, seed):
  """``{candidate: (lo, hi)}`` and ``{candidate: CPU s}`` for one dataset."""
  from scipy import stats
  n = u.shape[0]
  point = float(side_by_side([(u, r)])[0])
  out, cpu = {}, {}
  t0 = time.process_time()
  fq = np.asarray(model_bootstrap(u, r, num_draws=draws, seed=seed).forgetting_quality, np.float64)
  t_boot = time.process_time() - t0
  lo, hi = np.percentile(fq, [2.5, 97.5])
  bias = fq.mean() - point
  out["shifted percentile"] = (lo - bias, hi - bias)
  out["normal, bootstrap sd"] = (point - Z * fq.std(), point + Z * fq.std())
  cpu["shifted percentile"] = cpu["normal, bootstrap sd"] = t_boot
  t0 = time.process_time()
  m = n // 2
  sub = side_by_side([(u[rng.permutation(n)[:m]], r[rng.permutation(n)[:m]]) for _ in range(sub_draws)])
  half = Z * np.sqrt(m / (n - m)) * sub.std(ddof=1)
  out["half-sampling"] = (point - half, point + half)
  cpu["half-sampling"] = time.process_time() - t0
  t0 = time.process_time()
  gu, gr = rng.permutation(n).reshape(GROUPS, -1), rng.permutation(n).reshape(GROUPS, -1)
  keep = lambda g, k: np.sort(np.concatenate([g[j] for j in range(GROUPS) if j != k]))
  jack = side_by_side([(u[keep(gu, k)], r[keep(gr, k)]) for k in range(GROUPS)])
  half = stats.t.ppf(0.975, GROUPS - 1) * np.sqrt((GROUPS - 1) / GROUPS * ((jack - jack.mean()) ** 2).sum())
  out["grouped jackknife"] = (point - half, point + half)
  cpu["grouped jackknife"] = time.process_time() - t0
  return out, cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="16,64,256")
  parser.add_argument("--datasets", type=int, default=30, help="datasets per cell")
  parser.add_argument("--truth", type=int, default=300, help="redraws estimating E[F] and sd(F) per cell")
  parser.add_argument("--examples", type=int, default=10)
  parser.add_argument("--draws", type=int, default=200, help="model-bootstrap draws B")
  parser.add_argument("--sub-draws", type=int, default=100, help="half-sampling draws")
  parser.add_argument("--processes", default=",".join(PROCESSES))
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  print(f"E = {args.examples}; B = {args.draws}; {args.sub_draws} half-samples; K = {GROUPS} jackknife groups; "
        f"{args.truth} redraws for E[F]; nominal 95%", flush=True)
  print("| process | N | datasets | E[F] (sd) | candidate | coverage +- MC s.e. | width / ideal | CPU s |")
  print("|---|---|---|---|---|---|---|---|", flush=True)
  for n in [int(x) for x in args.sizes.split(",")]:
    for name in args.processes.split(","):
      delta, s = PROCESSES[name]
      mean_f, sd_f = truth(rng, n, args.examples, delta, s, args.truth)
      hits = {c: 0 for c in CANDIDATES}
      widths = {c: 0.0 for c in CANDIDATES}
      cpu = {c: 0.0 for c in CANDIDATES}
      for i in range(args.datasets):
        u, r = draw(rng, n, args.examples, delta, s)
        out, spent = intervals(rng, u, r, args.draws, args.sub_draws, seed=int(rng.integers(2 ** 31)))
        for c, (lo, hi) in out.items():
          hits[c] += lo <= mean_f <= hi
          widths[c] += (hi - lo) / args.datasets
          cpu[c] += spent[c]
      ideal = 2 * Z * sd_f
      for c in CANDIDATES:
        p = hits[c] / args.datasets
        print(f"| {name} | {n} | {args.datasets} | {mean_f:.4f} ({sd_f:.4f}) | {c} | "
              f"{p:.2f} +- {np.sqrt(p * (1 - p) / args.datasets):.2f} | {widths[c] / ideal:.2f} | {cpu[c]:.0f} |",
              flush=True)


if __name__ == "__main__":
  main()
