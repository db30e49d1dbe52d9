"""Comparing two methods' results on one setup: is A's forgetting quality better than B's?

The verdict treats the models as the random units. By default (``test="permutation"``,
:func:`unlearn_jax.metrics.paired.model_permutation_test`) it is a permutation test of ``F_A - F_B`` at all
N models: the 2N unlearned models are pooled and split at random into two sets of N, and the observed
difference is ranked among the splits' differences (exact under the null that both methods' models are
draws of one process). Beside it, :func:`unlearn_jax.metrics.paired.model_groups_test` gives a t interval
of the difference at N/K models per population (K disjoint groups of models; ``test="groups"`` makes its
paired t test the verdict, as it was before). Beside those, the paired bootstrap
over forget examples of ``points_A - points_B`` (:func:`compare_points`) is reported as what it is:
an interval *given these N models* (examples as the random units), not a test of the methods,
because models differ as wholes. ``unlearn-jax compare`` prints :func:`compare_runs`.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from unlearn_jax.metrics import epsilon_points
from unlearn_jax.metrics.paired import DEFAULT_PERMUTATIONS, model_groups_test, model_permutation_test
from unlearn_jax.results import report, setups

DEFAULT_DRAWS = 2000
TESTS = ("permutation", "groups")


def points_of(results: Mapping[str, Any], name: str) -> np.ndarray:
  """``[E]`` per-example points of a result (from its epsilons and its scored N)."""
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


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any], pop_a: Mapping[str, np.ndarray],
                 pop_b: Mapping[str, np.ndarray], *, names: tuple[str, str] = ("A", "B"), draws: int = DEFAULT_DRAWS,
                 groups: Any = None, level: float = 0.95, seed: int = 0, test: str = "permutation",
                 permutations: Any = None) -> dict[str, Any]:
  """The comparison of two results (``a``, ``b``: their ``results.json`` records; ``pop_a``, ``pop_b``: their
  ``populations.npz`` arrays): the model-level verdict (``test``: ``"permutation"``, P = ``permutations``
  random splits, default :data:`~unlearn_jax.metrics.paired.DEFAULT_PERMUTATIONS`; or ``"groups"``), the
  model-groups interval, the example-level interval given these models, and what the verdict is conditional on."""
  if test not in TESTS:
    raise ValueError(f"--test must be one of {', '.join(TESTS)}, got {test!r}")
  if test == "groups" and permutations is not None:
    raise ValueError("--permutations applies to --test permutation only (the groups test draws no permutations)")
  examples = compare_points(points_of(a, names[0]), points_of(b, names[1]), draws=draws, level=level, seed=seed)
  arrays = [p[f"{kind}/forget_confidence"] for p in (pop_a, pop_b) for kind in ("unlearned", "retrained")]
  grouped = model_groups_test(*arrays, groups=groups, level=level, seed=seed)
  if test == "permutation":
    models = model_permutation_test(*arrays, level=level, seed=seed,
                                    permutations=DEFAULT_PERMUTATIONS if permutations is None else permutations)
    conditional = ("the null that A's and B's unlearned models are draws of one process (exchangeable); this forget "
                   f"set and setup; F at all {models['num_models']} models; p from {models['permutations']} random "
                   "splits of the pooled models")
  else:
    models = grouped
    conditional = ("the models of each population are independent draws of their method's process; this forget set "
                   f"and setup; the difference of expected F at {models['models_per_group']} models per population")
  out = {"mean_difference": examples["mean_difference"], "verdict": models["verdict"], "test": test,
         "models": models, "groups": grouped, "given_models": examples, "level": float(level),
         "conditional_on": conditional}
  flags = {k: report.degenerate_flag(r.get("degenerate")) for k, r in (("a", a), ("b", b))}
  out |= {"a": {"method": a["method"], "dir": names[0], "forgetting_quality": float(a["forgetting_quality"]),
                "flag": flags["a"]},
          "b": {"method": b["method"], "dir": names[1], "forgetting_quality": float(b["forgetting_quality"]),
                "flag": flags["b"]},
          "setup": setups.describe(setups.setup_of(a))}
  return out
