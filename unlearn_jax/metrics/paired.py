"""Is method A's forgetting quality different from B's, with the models as the random units?

F is computed from N models per population, and models differ as wholes (one unlearned
model is a little more or less perturbed on every example), so the per-example points of
one evaluation are not independent: a test that pairs examples as independent units
(a bootstrap over examples, Wilcoxon over examples) rejects far above its level when
they do (measured: 35-41% at a nominal 5%, ``benchmarks/sim_statistics.py``).

:func:`model_groups_test` splits the N model indices at random into K disjoint groups
of ``n = N // K`` (the same indices for A, B and the retrained population, which the two
results share), scores F of A and of B on each group, and runs a one-sample t test on the
K paired differences ``d_k = F_A(group k) - F_B(group k)``. Disjoint groups of independent
models give independent ``d_k``, so the test holds its level whatever the dependence
between examples; the t distribution with K - 1 degrees of freedom is the normal
approximation of a mean of E per-example points.

What the verdict is conditional on: the models of each population are independent draws
of their method's (and the retraining's) process; the forget set and the setup are fixed
(examples are not resampled: the verdict is about this forget set); the estimand is the
difference of the expected F at ``n = N // K`` models per population (a method that is
no better or worse at N is no better or worse at n when the two populations have one
distribution; with different distributions the difference at n and at N share their sign
in the usual case, but not by necessity).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from unlearn_jax.metrics.privacy import check_pair, forgetting_metric

VERDICTS = ("A is better", "B is better", "not distinguishable at this N")


def default_groups(num_models: int) -> int:
  """K: a quarter of N, at least 2 and at most 8 (N = 16: 4 groups of 4; N = 64: 8 of 8; N = 256: 8 of 32)."""
  return int(min(8, max(2, num_models // 4)))


def group_qualities(unlearned_a: Any, retrained_a: Any, unlearned_b: Any, retrained_b: Any,
                    groups: np.ndarray) -> np.ndarray:
  """``[2, K]`` F of A (row 0) and B (row 1) on each group of model indices ``groups`` ``[K, n]`` (one metric call)."""
  ua, ra = check_pair(unlearned_a, retrained_a)
  ub, rb = check_pair(unlearned_b, retrained_b)
  k, n = groups.shape
  e = ua.shape[1]
  # [2, K, n, E] -> [n, 2 * K * E]: the metric treats examples independently
  lay = lambda x, y: np.stack([x[groups], y[groups]]).transpose(2, 0, 1, 3).reshape(n, -1)
  points = forgetting_metric(lay(ua, ub), lay(ra, rb)).points
  return points.reshape(2, k, e).mean(axis=2)


def model_groups_test(unlearned_a: Any, retrained_a: Any, unlearned_b: Any, retrained_b: Any, *,
                      groups: Optional[int] = None, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
  """Paired t test of ``F_A - F_B`` over K disjoint groups of models (see the module docstring).

  Args:
    unlearned_a, retrained_a: ``[N, E]`` confidences of method A's result.
    unlearned_b, retrained_b: the same for B (the same setup: the same forget set and
      retrained population).
    groups: K (default :func:`default_groups`); ``N // K >= 2`` models per group.
    level: coverage of the interval; the test's level is ``1 - level``.
    seed: seed of the split of the model indices into groups.

  Returns:
    ``{"groups", "models_per_group", "differences" [K], "mean_difference", "interval",
    "p_value", "level", "seed", "verdict"}``: the interval is the t interval of the mean
    difference at ``n`` models per population; the verdict names the better method when
    it excludes 0.
  """
  from scipy import stats
  ua = np.asarray(unlearned_a)
  if not (np.shape(unlearned_b) == np.shape(retrained_a) == np.shape(retrained_b) == ua.shape):
    raise ValueError(f"both results need populations of one shape [N, E], got {ua.shape} and {np.shape(unlearned_b)}")
  n_models = int(ua.shape[0]) if ua.ndim == 2 else 0
  k = default_groups(n_models) if groups is None else groups
  if isinstance(k, bool) or int(k) != k or k < 2 or n_models // int(k) < 2:
    raise ValueError(f"model groups must be an integer >= 2 with at least 2 models each (N = {n_models}), got {groups}")
  if not 0.0 < level < 1.0:
    raise ValueError(f"the level must lie strictly between 0 and 1, got {level}")
  k = int(k)
  size = n_models // k
  perm = np.random.default_rng(seed).permutation(n_models)
  idx = np.sort(perm[:k * size].reshape(k, size), axis=1)
  quality = group_qualities(unlearned_a, retrained_a, unlearned_b, retrained_b, idx)
  d = quality[0] - quality[1]
  mean = float(d.mean())
  sd = float(d.std(ddof=1))
  crit = float(stats.t.ppf(0.5 + level / 2.0, k - 1))
  if sd > 0:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      p = float(2.0 * stats.t.sf(abs(mean) / (sd / np.sqrt(k)), k - 1))
  else:  # every group gives the same difference
    p = 1.0 if mean == 0.0 else 0.0
  half = crit * sd / np.sqrt(k)
  lo, hi = mean - half, mean + half
  verdict = VERDICTS[2] if lo <= 0.0 <= hi else (VERDICTS[0] if mean > 0 else VERDICTS[1])
  return {"groups": k, "models_per_group": size, "differences": d.tolist(), "quality_a": quality[0].tolist(),
          "quality_b": quality[1].tolist(), "mean_difference": mean, "interval": [float(lo), float(hi)],
          "p_value": p, "level": float(level), "seed": int(seed), "verdict": verdict}
