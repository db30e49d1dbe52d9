"""``unlearn-jax compare DIR_A DIR_B``: is method A's forgetting quality better than B's on one setup?

Both results must share a setup (:mod:`unlearn_jax.results.setups`: the same forget set and the
same retrained population); it reads both results' ``populations.npz``. The comparison itself is
:func:`unlearn_jax.analysis.compare.compare_runs`: the verdict treats the models as the random units
(a permutation test over the pooled unlearned models by default, ``--test groups`` for the t test over
disjoint model groups), and the paired bootstrap over forget examples is reported as an interval given
these N models.
"""

from __future__ import annotations

import json
import os

import numpy as np

from unlearn_jax import checkpoint, files
from unlearn_jax.protocol import settings
from unlearn_jax.analysis import compare
from unlearn_jax.metrics import paired
from unlearn_jax.results import populations, report, setups, untrusted



def add_parser(sub) -> None:
  p = sub.add_parser("compare", help="paired comparison of two results' forgetting quality on one setup",
                     description=__doc__.split("\n\n")[0])
  p.add_argument("run_a", metavar="DIR_A", help="output directory (or results.json) of method A")
  p.add_argument("run_b", metavar="DIR_B", help="output directory (or results.json) of method B")
  p.add_argument("--draws", type=int, default=compare.DEFAULT_DRAWS, help="paired bootstrap draws over examples")
  p.add_argument("--test", choices=compare.TESTS, default="permutation",
                 help="the verdict's test: a permutation test over the pooled unlearned models at all N (default) or "
                      "the paired t test over disjoint model groups")
  p.add_argument("--permutations", type=int, default=None,
                 help=f"random splits of the permutation test (default {paired.DEFAULT_PERMUTATIONS}; each scores "
                      "2 x examples metric columns)")
  p.add_argument("--groups", type=int, default=None,
                 help="disjoint model groups K of the groups interval and test (default: N/4, between 2 and 8)")
  p.add_argument("--level", type=float, default=0.95, help="coverage of the intervals; the test's level is 1 - this")
  p.add_argument("--seed", type=int, default=0, help="seed of the permutations, model groups and bootstrap draws")
  p.add_argument("--output", default=None, help="also write the comparison as JSON to this file")


def _populations_of(path: str) -> dict[str, np.ndarray]:
  return populations.read_populations(path if os.path.isdir(path) else os.path.dirname(path) or ".")


def run(args) -> int:
  files.refuse_special_target(args.output or "")  # before any work: outputs replace only regular files
  a, b = report.read_results(args.run_a), report.read_results(args.run_b)
  setups.require_same_setup([a, b], [args.run_a, args.run_b])
  num_examples = len(a.get("per_example_epsilons") or [])
  settings.check_compare_draws(args.draws, num_examples)  # bounded before the draws
  settings.check_compare_permutations(args.permutations, num_examples)
  pop_a, pop_b = _populations_of(args.run_a), _populations_of(args.run_b)
  for r, p, d in ((a, pop_a, args.run_a), (b, pop_b, args.run_b)):
    untrusted.check_pair(r, p, f"run {d!r}")  # results.json and populations.npz of one run agree: N, epsilons
  out = compare.compare_runs(a, b, pop_a, pop_b, names=(args.run_a, args.run_b), draws=args.draws,
                             groups=args.groups, level=args.level, seed=args.seed, test=args.test,
                             permutations=args.permutations)
  models, grouped, examples = out["models"], out["groups"], out["given_models"]
  flags = {k: out[k]["flag"] for k in ("a", "b")}
  level = f"{100 * out['level']:g}%"
  print(f"setup: {out['setup']}")
  shown = untrusted.terminal_text  # method names come from files that may have been edited
  for k, r, d in (("a", a, args.run_a), ("b", b, args.run_b)):
    flag = f"  [{flags[k]}]" if flags[k] else ""
    print(f"{k.upper()} = {shown(r['method'])} ({shown(d)}): F {r['forgetting_quality']:.4f}{flag}")
  print(f"F(A) - F(B) = {out['mean_difference']:+.4f}")
  lo, hi = grouped["interval"]
  groups_line = (f"{grouped['groups']} disjoint groups of {grouped['models_per_group']} models, mean difference "
                 f"{grouped['mean_difference']:+.4f}, {level} t interval [{lo:+.4f}, {hi:+.4f}] of the difference at "
                 f"{grouped['models_per_group']} models per population")
  if out["test"] == "permutation":
    print(f"models as the random units: permutation test over the {2 * models['num_models']} pooled unlearned "
          f"models ({models['permutations']} random splits into two sets of {models['num_models']}), F(A) - F(B) "
          f"{models['mean_difference']:+.4f}, p = {models['p_value']:.3g}")
    print(f"interval (models as the random units, not the test): {groups_line}")
  else:
    print(f"models as the random units: {groups_line}, p = {grouped['p_value']:.3g}")
  lo, hi = examples["interval"]
  print(f"given these {len(pop_a['unlearned/forget_confidence'])} models (examples as the random units, not a test "
        f"of the methods): {level} paired bootstrap interval over {examples['num_examples']} examples "
        f"[{lo:+.4f}, {hi:+.4f}]; Wilcoxon signed-rank p = {examples['wilcoxon_p']:.3g}")
  print(f"verdict: {out['verdict']} (conditional on {out['conditional_on']})")
  if args.output:
    if os.path.dirname(args.output):
      os.makedirs(os.path.dirname(args.output), exist_ok=True)
    checkpoint.atomic_write_text(args.output, json.dumps(out, indent=1) + "\n")
  return 0
