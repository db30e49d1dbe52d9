"""Bootstrap intervals of the forgetting quality F and of the final score.

With a finite N, F is a random variable. :func:`bootstrap_intervals` reports

* the **model bootstrap**: N unlearned and, independently, N retrained models drawn with
  replacement, F recomputed per draw (:func:`unlearn_jax.metrics.bootstrap.model_bootstrap`:
  all B draws in one batched computation). The final score of each draw reuses the same
  draw's indices for the per-model retain and test accuracies, so its interval carries the
  accuracies' sampling noise together with F's;
* the **example bootstrap**: forget examples drawn with replacement, each keeping its
  epsilon (:func:`unlearn_jax.metrics.bootstrap.example_bootstrap`): how much F depends
  on which examples are in the forget set.

Resampling models with replacement duplicates them, and duplicated confidences make two
populations easier to separate, so the model-bootstrap draws of F sit *below* F: measured
on two samples of one normal distribution (N = 16, E = 144), 20 independent replicates
gave F = 0.174 +- 0.0085 (sd), while 100 bootstrap draws around one replicate's F = 0.160
had mean 0.115 and sd 0.0102. The draws' spread matches the sampling spread; their
location does not. So the model-bootstrap interval reported first is the percentile
interval shifted by the bootstrap's bias estimate (``lo, hi = q_lo - b, q_hi - b`` with
``b = mean(draws) - point``); the plain percentile interval (2.5 / 97.5 % for ``level =
0.95``) and ``b`` are recorded beside it. The example bootstrap has no such bias (a mean
of per-example points) and reports the plain percentile interval.

Resampling intervals under-cover at small N: on two identical normal populations
(``benchmarks/sim_intervals.py``) the shifted percentile covered E[F] in 175 of 200
datasets at N = 16 (0.875), 47 / 50 at N = 64 and 31 / 34 at N = 256. So a **grouped
jackknife** interval is reported beside it (:func:`grouped_jackknife`: each population's
models in K = 8 random groups, F without group k of both, ``F +- t_{K-1} * sqrt((K-1)/K *
sum (F_k - mean)^2)``), which covered in every one of those datasets at about twice the
ideal width: the one to read where coverage matters more than width, at N below 64.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np

DEFAULT_DRAWS = 200


def _summary(values: np.ndarray, level: float, point: Optional[float] = None) -> dict[str, Any]:
  """Percentile interval of ``values``; with ``point``, shifted by the bias ``mean(values) - point``."""
  from unlearn_jax.metrics.bootstrap import interval
  lo, hi = (float(v) for v in interval(values, level))
  out = {"lo": lo, "hi": hi, "std": float(np.std(values)), "mean": float(np.mean(values))}
  if point is not None:
    bias = out["mean"] - float(point)
    out.update(lo=lo - bias, hi=hi - bias, point=float(point), bias=bias, percentile=[lo, hi])
  return out


def _check_draws_and_level(num_draws: Any, level: float) -> None:
  if int(num_draws) != num_draws or num_draws < 2:
    raise ValueError(f"the number of bootstrap draws must be an integer >= 2, got {num_draws}")
  if not 0.0 < level < 1.0:
    raise ValueError(f"the interval level must lie strictly between 0 and 1, got {level}")


JACKKNIFE_GROUPS = 8


def grouped_jackknife(unlearned_confs: Any, retrained_confs: Any, point: float, *, groups: int = JACKKNIFE_GROUPS,
                      level: float = 0.95, seed: int = 0) -> dict[str, Any]:
  """The grouped-jackknife interval of F around ``point`` (F of all N models).

  Each population's N models are split into ``K = min(groups, N)`` groups at random
  (``np.random.default_rng(seed).permutation(N)`` for the unlearned, then one for the
  retrained, each cut by ``np.array_split``); ``F_k`` is F without group k of both, the
  half-width ``t_{K-1} * sqrt((K-1)/K * sum_k (F_k - mean)^2)`` (Student's t at ``level``).
  Returns ``{lo, hi, point, std, groups}`` (``std`` the jackknife standard error).
  """
  from scipy import stats
  from unlearn_jax.metrics.bootstrap import subset_points
  u, r = np.asarray(unlearned_confs, np.float64), np.asarray(retrained_confs, np.float64)
  n = int(u.shape[0])
  k = min(int(groups), n)
  if k < 2:
    raise ValueError(f"the grouped jackknife needs at least 2 models per population, got {n}")
  rng = np.random.default_rng(seed)
  gu, gr = np.array_split(rng.permutation(n), k), np.array_split(rng.permutation(n), k)
  keep = lambda g, j: np.sort(np.concatenate([g[i] for i in range(k) if i != j]))
  values = np.empty(k)
  for size in sorted({n - len(g) for g in gu}):  # at most two sizes: one call each
    which = [j for j in range(k) if n - len(gu[j]) == size]
    points = subset_points(u, r, np.stack([keep(gu, j) for j in which]), np.stack([keep(gr, j) for j in which]))
    values[which] = points.mean(axis=1)
  se = float(np.sqrt((k - 1) / k * np.sum((values - values.mean()) ** 2)))
  half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * se
  return {"lo": float(point) - half, "hi": float(point) + half, "point": float(point), "std": se, "groups": k}


def final_scores_of_draws(forgetting_quality: np.ndarray, unlearned_idx: np.ndarray, retrained_idx: np.ndarray,
                          unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray]) -> np.ndarray:
  """``[B]`` final scores ``F_b * (RA_U / RA_R) * (TA_U / TA_R)`` with each draw's means over its model indices.

  ``unlearned_idx`` / ``retrained_idx`` ``[B, N]`` index the per-model accuracies
  ``retain_accuracy`` / ``test_accuracy`` ``[N]`` of each population (vectorised over draws).
  """
  mean = lambda pop, name, idx: np.asarray(pop[name], np.float64)[np.asarray(idx)].mean(axis=1)
  ratio_retain = mean(unlearned, "retain_accuracy", unlearned_idx) / mean(retrained, "retain_accuracy", retrained_idx)
  ratio_test = mean(unlearned, "test_accuracy", unlearned_idx) / mean(retrained, "test_accuracy", retrained_idx)
  return np.asarray(forgetting_quality, np.float64) * ratio_retain * ratio_test


def bootstrap_intervals(unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray], epsilons: Any, *,
                        num_draws: int = DEFAULT_DRAWS, seed: int = 0, level: float = 0.95,
                        progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
  """Model- and example-bootstrap intervals, as stored in ``results.json`` under ``"bootstrap"``.

  Args:
    unlearned, retrained: per population ``forget_confidence`` ``[N, E]`` and the per-model
      ``retain_accuracy`` / ``test_accuracy`` ``[N]``.
    epsilons: ``[E]`` per-example epsilons of the full populations (for the example bootstrap).
    num_draws: B, draws of each bootstrap.
    seed: seed of the draws.
    level: coverage of the intervals.
    progress: optional ``progress(done, total)`` of the model bootstrap, called with the (example,
      draw) pairs done after each block (:func:`unlearn_jax.metrics.bootstrap.model_bootstrap`).

  Returns:
    ``{"num_draws", "seed", "level", "forgetting_quality": {lo, hi, std, mean, point, bias,
    percentile}, "final_score": {...}, "example_forgetting_quality": {lo, hi, std, mean},
    "jackknife_forgetting_quality": {lo, hi, point, std, groups}}`` (model-bootstrap intervals
    bias-shifted, and the grouped jackknife of :func:`grouped_jackknife`; see the module docstring).
  """
  from unlearn_jax.metrics import epsilon_points
  from unlearn_jax.metrics.bootstrap import example_bootstrap, model_bootstrap
  _check_draws_and_level(num_draws, level)
  u_conf = np.asarray(unlearned["forget_confidence"])
  n = int(u_conf.shape[0])
  draws = model_bootstrap(u_conf, np.asarray(retrained["forget_confidence"]), num_draws=int(num_draws), seed=seed,
                          progress=progress)
  fq = np.asarray(draws.forgetting_quality, np.float64)
  final = final_scores_of_draws(fq, draws.unlearned_idx, draws.retrained_idx, unlearned, retrained)
  eps = np.asarray(epsilons, np.float64)
  point_fq = float(epsilon_points(eps, n).mean())
  everyone = np.arange(n)[None, :]
  point_final = float(final_scores_of_draws(np.array([point_fq]), everyone, everyone, unlearned, retrained)[0])
  examples = np.asarray(example_bootstrap(eps, n, num_draws=int(num_draws), seed=seed), np.float64)
  jackknife = grouped_jackknife(u_conf, retrained["forget_confidence"], point_fq, level=level, seed=seed)
  return {"num_draws": int(num_draws), "seed": int(seed), "level": float(level),
          "forgetting_quality": _summary(fq, level, point_fq), "final_score": _summary(final, level, point_final),
          "example_forgetting_quality": _summary(examples, level), "jackknife_forgetting_quality": jackknife}


def forgetting_quality_interval(unlearned_confs: Any, retrained_confs: Any, *, num_draws: int = DEFAULT_DRAWS,
                                seed: int = 0, level: float = 0.95,
                                progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
  """The model-bootstrap interval of F alone (``{lo, hi, std, mean, point, bias, percentile}``, as
  ``bootstrap_intervals(...)["forgetting_quality"]``) of ``[N, E]`` unlearned and retrained confidences;
  ``progress`` as in :func:`bootstrap_intervals`."""
  from unlearn_jax.metrics import forgetting_quality
  from unlearn_jax.metrics.bootstrap import model_bootstrap
  _check_draws_and_level(num_draws, level)
  draws = model_bootstrap(unlearned_confs, retrained_confs, num_draws=int(num_draws), seed=seed, progress=progress)
  point = float(forgetting_quality(unlearned_confs, retrained_confs))
  return _summary(np.asarray(draws.forgetting_quality, np.float64), level, point)
