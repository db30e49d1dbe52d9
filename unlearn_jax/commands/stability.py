"""``unlearn-jax stability DIR...``: are N models enough to rank these methods?

Reads each result's ``populations.npz`` (written by ``evaluate``), requires one setup for
all of them, and for n = 8, 16, ..., N scores R subsamples of n models per population (the
same indices for every method): first what a fresh evaluation at n gives, Kendall's tau of one
subsample's ranking against the ranking at N (mean and the spread of the subsamples) and, where
2n <= N, tau between two subsamples with no model in common; then each method's mean F and
spread per n, and the tau of the ranking of the mean F (:mod:`unlearn_jax.analysis.stability`), with
each method's no-op flag (its result's check at N, as in ``leaderboard``).
Prints a table, writes it with ``--table`` and the plot to ``--plot`` (PNG).
"""

from __future__ import annotations

import os

from unlearn_jax import checkpoint, files
from unlearn_jax.analysis import stability
from unlearn_jax.protocol import settings
from unlearn_jax.results import populations, report, setups, untrusted


def add_parser(sub) -> None:
  p = sub.add_parser("stability", help="method rankings from subsamples of n models, n = 8 ... N",
                     description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="+", metavar="DIR", help="output directories of 'unlearn-jax evaluate' (one setup)")
  p.add_argument("--repeats", type=int, default=stability.DEFAULT_REPEATS, help="subsamples per n (R)")
  p.add_argument("--sizes", default=None, help="comma-separated n to try (default 8, 16, ... below N, and N)")
  p.add_argument("--seed", type=int, default=0, help="seed of the subsample draws")
  p.add_argument("--format", default="markdown", choices=["markdown", "csv"], help="table format")
  p.add_argument("--table", default=None, help="also write the table to this file")
  p.add_argument("--plot", default="stability.png", help="PNG plot path ('' for none)")


def _sizes(text):
  if text is None:
    return None
  try:
    return [int(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise ValueError(f"--sizes must be comma-separated integers, got {text!r}") from None


def run(args) -> int:
  for target in (args.table, args.plot):  # before any work: outputs replace only regular files
    files.refuse_special_target(target or "")
  results = [report.read_results(d) for d in args.runs]
  setups.require_same_setup(results, args.runs)
  pops = [populations.read_populations(d if os.path.isdir(d) else os.path.dirname(d) or ".") for d in args.runs]
  for r, p, d in zip(results, pops, args.runs):
    untrusted.check_pair(r, p, f"run {d!r}")  # results.json and populations.npz of one run agree
  names = [untrusted.terminal_text(r["method"]) for r in results]
  if len(set(names)) != len(names):  # two configurations of one method: name them by directory
    names = [untrusted.terminal_text(f"{r['method']} ({d})") for r, d in zip(results, args.runs)]
  settings.check_repeats(args.repeats, len(pops), *pops[0]["unlearned/forget_confidence"].shape)  # bounded first
  out = stability.stability(names, [p["unlearned/forget_confidence"] for p in pops],
                            [p["retrained/forget_confidence"] for p in pops], sizes=_sizes(args.sizes),
                            repeats=args.repeats, seed=args.seed,
                            flags=[report.degenerate_flag(r.get("degenerate")) for r in results])
  text = stability.table(out, args.format)
  print(f"setup: {setups.describe(setups.setup_of(results[0]))}; {out['repeats']} subsamples per n")
  print("mean_tau: one evaluation at n against the ranking at N (tau_lo, tau_hi: the spread of the subsamples); "
        "disjoint_tau: two evaluations at n with no model in common (2n <= N)")
  print(text, end="")
  if args.table:
    checkpoint.atomic_write_text(args.table, text)
  if args.plot:
    stability.write_plot(out, args.plot, f"{setups.describe(setups.setup_of(results[0]))}: "
                                         f"{out['repeats']} subsamples per n")
    print(f"plot: {args.plot}")
  return 0
