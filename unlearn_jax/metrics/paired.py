"""Is method A's forgetting quality different from B's, with the models as the random units?

F is computed from N models per population, and models differ as wholes (one unlearned
model is a little more or less perturbed on every example), so the per-example points of
one evaluation are not independent: a test that pairs examples as independent units
(a bootstrap over examples, Wilcoxon over examples) rejects far above its level when
they do (measured: 6.5-12% at a nominal 5% over 10 examples, ``benchmarks/sim_statistics.py``).

:func:`model_permutation_test` (``compare``'s verdict) uses all N models of each result. Under
its null, A's and B's unlearned models are draws of one process (the 2N models are
exchangeable, given the retrained populations): it pools the 2N unlearned models, splits them
at random into two sets of N many times, scores ``F(set 1) - F(set 2)`` against the retrained
populations (A's for set 1, B's for set 2: one population when the results share it), and
returns the two-sided Monte-Carlo p-value of the observed ``F_A - F_B``,
``p = (1 + #{|d*| >= |d_obs|}) / (1 + P)`` over P random splits. The test is exact under that
null (its level is at most the nominal one at any P), whatever the dependence between examples.
What a rejection is conditional on: this forget set and setup (examples are not resampled), and
the null of one process for both methods' models; a difference in the spread of the models
alone, at equal expected F, can also be rejected. It gives a p-value, not an interval.

:func:`model_groups_test` splits the N model indices at random into K disjoint groups
of ``n = N // K`` (the same indices for A, B and the retrained population, which the two
results share), scores F of A and of B on each group, and runs a one-sample t test on the
K paired differences ``d_k = F_A(group k) - F_B(group k)``. Disjoint groups of independent
models give independent ``d_k``, so the test holds its level whatever the dependence
between examples; the t distribution with K - 1 degrees of freedom is the normal
approximation of a mean of E per-example points.

What its verdict (``compare --test groups``) is conditional on: the models of each population are independent draws
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

from unlearn_jax.metrics.bootstrap import subset_points
from unlearn_jax.metrics.privacy import check_pair, forgetting_metric

VERDICTS = ("A is better", "B is better", "not distinguishable at this N")
DEFAULT_PERMUTATIONS = 99
# Pooled-model indices of the permutation test's splits held at once ([splits, 2N] int64: 32 MB).
BLOCK_CELLS = 1 << 22


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


def split_differences(unlearned: np.ndarray, retrained_a: np.ndarray, retrained_b: np.ndarray,
                      splits: np.ndarray) -> np.ndarray:
  """``[P]`` sums over examples of ``points(set 1) - points(set 2)`` for each split.

  ``unlearned`` ``[2N, E]``: the pooled unlearned models; ``splits`` ``[P, 2N]``: permutations of
  their indices, the first N of a row are set 1 (scored against ``retrained_a``), the last N set 2
  (against ``retrained_b``). Each set's points are the metric's on that set, computed as the model
  bootstrap computes a draw, in one call for both sets of every split
  (:func:`unlearn_jax.metrics.bootstrap.subset_points`: each example sorted once, a set is a 0/1
  weight per pooled model, each search stopped once the score bucket is settled). Sums of points
  are exact (points are powers of two), so equal differences compare equal.
  """
  p, two_n = splits.shape
  n = two_n // 2
  # One call for both sets: the retrained pool is A's models (rows 0 .. N-1) then B's (N .. 2N-1); set 1 of
  # every split is scored against all of A's, set 2 against all of B's.
  retrained = np.concatenate([retrained_a, retrained_b])
  sets = np.concatenate([splits[:, :n], splits[:, n:]])
  against = np.repeat(np.arange(two_n).reshape(2, 1, n), p, axis=1).reshape(2 * p, n)
  points = subset_points(unlearned, retrained, sets, against).sum(axis=1)
  return points[:p] - points[p:]


def model_permutation_test(unlearned_a: Any, retrained_a: Any, unlearned_b: Any, retrained_b: Any, *,
                           permutations: int = DEFAULT_PERMUTATIONS, level: float = 0.95,
                           seed: int = 0) -> dict[str, Any]:
  """Permutation test of ``F_A - F_B`` over the pooled unlearned models (see the module docstring).

  Args:
    unlearned_a, retrained_a: ``[N, E]`` confidences of method A's result.
    unlearned_b, retrained_b: the same for B (the same setup).
    permutations: P random splits of the pooled 2N models; ``1 / (P + 1) <= 1 - level`` (else the test could
      never reject).
    level: the test's level is ``1 - level``.
    seed: seed of the splits.

  Returns:
    ``{"permutations", "num_models", "mean_difference", "permuted_differences" [P], "p_value", "level", "seed",
    "verdict"}``: ``mean_difference`` is ``F_A - F_B`` at all N models; the verdict names the better
    method when ``p <= 1 - level``.
  """
  ua, ra = check_pair(unlearned_a, retrained_a)
  ub, rb = check_pair(unlearned_b, retrained_b)
  if ua.shape != ub.shape:
    raise ValueError(f"both results need populations of one shape [N, E], got {ua.shape} and {ub.shape}")
  if not 0.0 < level < 1.0:
    raise ValueError(f"the level must lie strictly between 0 and 1, got {level}")
  if isinstance(permutations, bool) or int(permutations) != permutations or permutations < 1:
    raise ValueError(f"--permutations must be an integer >= 1, got {permutations!r}")
  p_count = int(permutations)
  if 1.0 / (p_count + 1) > 1.0 - level:
    need = int(np.ceil(1.0 / (1.0 - level) - 1.0 - 1e-9))
    raise ValueError(f"--permutations {p_count} cannot give p <= {1.0 - level:g} (the smallest p is 1 / (P + 1)); "
                     f"use at least {need}")
  n, e = ua.shape
  rng = np.random.default_rng(seed)
  pooled = np.concatenate([ua, ub])
  block = max(1, BLOCK_CELLS // (2 * n))  # splits drawn a block at a time: [block, 2N] indices in memory
  sums = []
  for start in range(0, p_count + 1, block):
    splits = np.stack([rng.permutation(2 * n) for _ in range(min(block, p_count + 1 - start))])
    if start == 0:
      splits[0] = np.arange(2 * n)  # the observed assignment: A's models are set 1
    sums.append(split_differences(pooled, ra, rb, splits))
  sums = np.concatenate(sums)
  observed, permuted = sums[0], sums[1:]
  # ties count against rejection; the tolerance only guards the exact sums of powers of two
  extreme = int(np.count_nonzero(np.abs(permuted) >= abs(observed) * (1.0 - 1e-12)))
  p = (1 + extreme) / (1 + p_count)
  mean = float(observed / e)
  verdict = VERDICTS[2] if p > 1.0 - level or mean == 0.0 else (VERDICTS[0] if mean > 0 else VERDICTS[1])
  return {"permutations": p_count, "num_models": int(n), "mean_difference": mean,
          "permuted_differences": (permuted / e).tolist(), "p_value": float(p), "level": float(level),
          "seed": int(seed), "verdict": verdict}
