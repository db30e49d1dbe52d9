"""``unlearn-jax compare DIR_A DIR_B``: is method A's forgetting quality better than B's on one setup?

Both results must share a setup (:mod:`unlearn_jax.results.setups`: the same forget set and the
same retrained population). The verdict treats the models as the random units
(:func:`unlearn_jax.metrics.paired.model_groups_test`): the N models are split into K
disjoint groups, F of A and of B is scored on each, and a paired t test over the K
groups decides; it reads both results' ``populations.npz``. Beside it, the paired
bootstrap over forget examples of ``points_A - points_B`` is reported as what it is: an
interval *given these N models* (examples as the random units), which is not a test of
the methods, because models differ as wholes.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Mapping

import numpy as np

from unlearn_jax import checkpoint, files
from unlearn_jax.protocol import settings
from unlearn_jax.results import populations, report, setups, untrusted

DEFAULT_DRAWS = 2000


def add_parser(sub) -> None:
  p = sub.add_parser("compare", help="paired comparison of two results' forgetting quality on one setup",
                     description=__doc__.split("\n\n")[0])
  p.add_argument("run_a", metavar="DIR_A", help="output directory (or results.json) of method A")
  p.add_argument("run_b", metavar="DIR_B", help="output directory (or results.json) of method B")
  p.add_argument("--draws", type=int, default=DEFAULT_DRAWS, help="paired bootstrap draws over examples")
  p.add_argument("--groups", type=int, default=None,
                 help="disjoint model groups K of the model-level test (default: N/4, between 2 and 8)")
  p.add_argument("--level", type=float, default=0.95, help="coverage of the interval")
  p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
  p.add_argument("--output", default=None, help="also write the comparison as JSON to this file")


def points_of(results: Mapping[str, Any], name: str) -> np.ndarray:
  """``[E]`` per-example points of a result (from its epsilons and its scored N)."""
  from unlearn_jax.metrics import epsilon_points
  eps = np.asarray(results.get("per_example_epsilons", []), np.float64)
  if eps.ndim != 1 or eps.size == 0 or not np.all(np.isfinite(eps)):
    raise ValueError(f"{name}: results lack finite per-example epsilons")
  return epsilon_points(eps, int(results.get("num_models_scored", results.get("num_models"))))


def compare_points(points_a: np.ndarray, points_b: np.ndarray, *, draws: int = DEFAULT_DRAWS, level: float = 0.95,
                   seed: int = 0) -> dict[str, Any]:
  """Paired comparison of two ``[E]`` per-example point vectors (A minus B).

  Returns ``{"mean_difference", "interval": [lo, hi], "wilcoxon_p", "num_examples",
  "draws", "level", "verdict"}``; ``verdict`` is ``"A is better"``, ``"B is better"``
  or ``"not distinguishable at this N"`` (the interval covers 0). Wilcoxon's p is 1
  when every difference is 0.
  """
  from scipy import stats
  a, b = np.asarray(points_a, np.float64), np.asarray(points_b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f"per-example points must be two vectors of one length, got {a.shape} and {b.shape}")
  if int(draws) != draws or draws < 2:
    raise ValueError(f"--draws must be an integer >= 2, got {draws}")
  if not 0.0 < level < 1.0:
    raise ValueError(f"--level must lie strictly between 0 and 1, got {level}")
  diff = a - b
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, diff.size, (int(draws), diff.size))
  means = diff[idx].mean(axis=1)
  tail = (1.0 - level) / 2.0
  lo, hi = (float(v) for v in np.quantile(means, [tail, 1.0 - tail]))
  with warnings.catch_warnings():  # scipy warns about ties and small samples; the p-value stands
    warnings.simplefilter("ignore")
    p = 1.0 if not np.any(diff) else float(stats.wilcoxon(diff).pvalue)
  mean = float(diff.mean())
  if lo <= 0.0 <= hi:
    verdict = "not distinguishable at this N"
  else:
    verdict = "A is better" if mean > 0 else "B is better"
  return {"mean_difference": mean, "interval": [lo, hi], "wilcoxon_p": p, "num_examples": int(diff.size),
          "draws": int(draws), "level": float(level), "verdict": verdict}


def _populations_of(path: str) -> dict[str, np.ndarray]:
  return populations.read_populations(path if os.path.isdir(path) else os.path.dirname(path) or ".")


def run(args) -> int:
  from unlearn_jax.metrics.paired import model_groups_test
  files.refuse_special_target(args.output or "")  # before any work: outputs replace only regular files
  a, b = report.read_results(args.run_a), report.read_results(args.run_b)
  setups.require_same_setup([a, b], [args.run_a, args.run_b])
  settings.check_compare_draws(args.draws, len(a.get("per_example_epsilons") or []))  # bounded before the draws
  pop_a, pop_b = _populations_of(args.run_a), _populations_of(args.run_b)
  examples = compare_points(points_of(a, args.run_a), points_of(b, args.run_b), draws=args.draws, level=args.level,
                            seed=args.seed)
  models = model_groups_test(pop_a["unlearned/forget_confidence"], pop_a["retrained/forget_confidence"],
                             pop_b["unlearned/forget_confidence"], pop_b["retrained/forget_confidence"],
                             groups=args.groups, level=args.level, seed=args.seed)
  out = {"mean_difference": examples["mean_difference"], "verdict": models["verdict"], "models": models,
         "given_models": examples, "level": float(args.level),
         "conditional_on": "the models of each population are independent draws of their method's process; "
                           "this forget set and setup; the difference of expected F at "
                           f"{models['models_per_group']} models per population"}
  flags = {k: report.degenerate_flag(r.get("degenerate")) for k, r in (("a", a), ("b", b))}
  out |= {"a": {"method": a["method"], "dir": args.run_a, "forgetting_quality": float(a["forgetting_quality"]),
                "flag": flags["a"]},
          "b": {"method": b["method"], "dir": args.run_b, "forgetting_quality": float(b["forgetting_quality"]),
                "flag": flags["b"]},
          "setup": setups.describe(setups.setup_of(a))}
  level = f"{100 * out['level']:g}%"
  print(f"setup: {out['setup']}")
  shown = untrusted.terminal_text  # method names come from files that may have been edited
  for k, r, d in (("a", a, args.run_a), ("b", b, args.run_b)):
    flag = f"  [{flags[k]}]" if flags[k] else ""
    print(f"{k.upper()} = {shown(r['method'])} ({shown(d)}): F {r['forgetting_quality']:.4f}{flag}")
  print(f"F(A) - F(B) = {out['mean_difference']:+.4f}")
  lo, hi = models["interval"]
  print(f"models as the random units: {models['groups']} disjoint groups of {models['models_per_group']} models, "
        f"mean difference {models['mean_difference']:+.4f}, {level} t interval [{lo:+.4f}, {hi:+.4f}], "
        f"p = {models['p_value']:.3g}")
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
