"""U-LiRA, the per-example likelihood-ratio attack on unlearning (``docs/evaluations.md`` section 4).

Hayes, Shumailov, Triantafillou, Khalifa, Papernot, *Inexact unlearning needs more
careful evaluations to avoid a false sense of privacy* (arXiv 2403.01218). The two
populations are their own shadow models, cross-fitted:

* The model indices ``0 .. N-1`` (model i of each population) are permuted with
  ``np.random.default_rng(seed)`` and split into K contiguous folds
  (``np.array_split``; sizes differ by at most one).
* For fold k, per example x: ``mu_u[x]``, ``sigma_u[x]`` (mean and population standard
  deviation, ddof 0) of the unlearned models outside fold k, ``mu_r[x]``, ``sigma_r[x]``
  of the retrained models outside fold k. ``fixed_variance=True`` replaces each
  population's per-example variance by its mean over examples (LiRA's fixed variance).
  Standard deviations are floored at :data:`SIGMA_FLOOR` so that a population with zero
  spread gives a finite (and very confident) score.
* Each model i in fold k, unlearned or retrained, scores its confidence c on example x
  with ``s = log N(c; mu_u, sigma_u^2) - log N(c; mu_r, sigma_r^2)``; positive means
  "looks unlearned".
* Per-pair attack: predict unlearned iff ``s > 0``. Per-model attack: the sum of s over
  the examples, predict unlearned iff it is ``> 0``.

Reported (unlearned is the positive class): balanced accuracy (for pairs, the mean over
examples of the per-example balanced accuracy), ROC AUC (``P(s_pos > s_neg) + P(tie) / 2``,
pairs pooled over all examples), and TPR at 1% and 0.1% FPR: the largest TPR of a
threshold ``t`` (predict unlearned iff ``s >= t``) whose FPR is at most the level, i.e.
``#(pos > v) / n_pos`` with v the ``(floor(level * n_neg) + 1)``-th largest negative score.
Beside each, ``*_max_fpr_at_*`` is the FPR that threshold is allowed, ``floor(level *
n_neg) / n_neg``: with fewer negatives than ``1 / level`` (the per-model attack has N
negatives, so N < 100 for 1%) it is 0, and the "TPR at 1% FPR" is a TPR at 0% FPR.
Perfect unlearning gives accuracy and AUC about 0.5.

Device: one jitted function, float64 under a scoped ``jax.enable_x64``: the Gaussian
fits and scores, vmapped over examples (memory a small multiple of the input's), and the
balanced accuracies. Host (NumPy): AUC and TPR at low FPR, exact rank statistics of the
``N x E`` pooled scores; NumPy sorts them several times faster than XLA's CPU sort.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.metrics.klom import check_populations

SIGMA_FLOOR = 1e-4
MIN_OUT_OF_FOLD = 2
# FPR levels as exact fractions: (name suffix, denominator).
FPR_LEVELS = (("1pct", 100), ("0p1pct", 1000))
KEYS = ("pair_balanced_accuracy", "pair_auc", "pair_tpr_at_1pct_fpr", "pair_tpr_at_0p1pct_fpr",
        "model_balanced_accuracy", "model_auc", "model_tpr_at_1pct_fpr", "model_tpr_at_0p1pct_fpr",
        "pair_max_fpr_at_1pct_fpr", "pair_max_fpr_at_0p1pct_fpr", "model_max_fpr_at_1pct_fpr",
        "model_max_fpr_at_0p1pct_fpr")


def fold_assignment(num_models: int, folds: int, seed: int) -> np.ndarray:
  """``[N]`` int32 fold of each model index: a seeded permutation split into ``folds`` contiguous parts."""
  perm = np.random.default_rng(seed).permutation(num_models)
  fold_of = np.empty(num_models, np.int32)
  for k, part in enumerate(np.array_split(perm, folds)):
    fold_of[part] = k
  return fold_of


def _fold_moments(c, out_weights):
  """``[K]`` mean and population variance of one example's ``[N]`` confidences over each fold's outside models."""
  count = out_weights.sum(axis=1)
  mean = out_weights @ c / count
  var = (out_weights * (c[None, :] - mean[:, None]) ** 2).sum(axis=1) / count
  return mean, var


def _log_ratio(c, mu_u, var_u, mu_r, var_r):
  """``log N(c; mu_u, var_u) - log N(c; mu_r, var_r)`` with standard deviations floored."""
  sd_u = jnp.maximum(jnp.sqrt(var_u), SIGMA_FLOOR)
  sd_r = jnp.maximum(jnp.sqrt(var_r), SIGMA_FLOOR)
  return (jnp.log(sd_r) - jnp.log(sd_u) - 0.5 * ((c - mu_u) / sd_u) ** 2 + 0.5 * ((c - mu_r) / sd_r) ** 2)


def _ranking(prefix: str, pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
  """ROC AUC and TPR at the FPR levels of positive vs negative scores (host NumPy, exact).

  AUC is ``(#(neg < s) + #(neg <= s)) / 2`` summed over positive scores s, over
  ``n_pos * n_neg``, from sorted arrays (integer counts, so ties count exactly half).
  """
  pos, neg = np.sort(pos), np.sort(neg)
  below = np.searchsorted(neg, pos, side="left").astype(np.int64)
  at_or_below = np.searchsorted(neg, pos, side="right").astype(np.int64)
  out = {f"{prefix}_auc": float(np.sum(below + at_or_below)) / (2.0 * pos.shape[0] * neg.shape[0])}
  n_neg = neg.shape[0]
  for name, denominator in FPR_LEVELS:
    k = n_neg // denominator  # negatives allowed at or above the threshold
    v = neg[n_neg - 1 - k] if k < n_neg else -np.inf
    above = pos.shape[0] - np.searchsorted(pos, v, side="right")
    out[f"{prefix}_tpr_at_{name}_fpr"] = float(above) / pos.shape[0]
    out[f"{prefix}_max_fpr_at_{name}_fpr"] = float(k) / n_neg
  return out


@functools.partial(jax.jit, static_argnames=("num_folds", "fixed_variance"))
def _ulira_kernel(u, r, fold_of, *, num_folds: int, fixed_variance: bool):
  """The eight statistics of :func:`ulira` from ``[N, E]`` float64 confidences and ``[N]`` folds."""
  out_weights = (fold_of[None, :] != jnp.arange(num_folds)[:, None]).astype(u.dtype)  # [K, N]
  # per example: [K, E] moments of the outside models
  mu_u, var_u = jax.vmap(_fold_moments, in_axes=(1, None), out_axes=1)(u, out_weights)
  mu_r, var_r = jax.vmap(_fold_moments, in_axes=(1, None), out_axes=1)(r, out_weights)
  if fixed_variance:
    var_u = jnp.broadcast_to(var_u.mean(axis=1, keepdims=True), var_u.shape)
    var_r = jnp.broadcast_to(var_r.mean(axis=1, keepdims=True), var_r.shape)
  # each model uses its own fold's fit
  score = lambda c, i: _log_ratio(c, mu_u[i], var_u[i], mu_r[i], var_r[i])
  s_u = jax.vmap(score)(u, fold_of)  # [N, E]
  s_r = jax.vmap(score)(r, fold_of)
  pair_acc = 0.5 * (jnp.mean((s_u > 0).astype(u.dtype), axis=0) + jnp.mean((s_r <= 0).astype(u.dtype), axis=0))
  m_u, m_r = s_u.sum(axis=1), s_r.sum(axis=1)
  model_acc = 0.5 * (jnp.mean((m_u > 0).astype(u.dtype)) + jnp.mean((m_r <= 0).astype(u.dtype)))
  return {"pair_balanced_accuracy": jnp.mean(pair_acc), "model_balanced_accuracy": model_acc,
          "pair_unlearned": s_u, "pair_retrained": s_r, "model_unlearned": m_u, "model_retrained": m_r}


def min_models(folds: int) -> int:
  """Smallest N whose K-fold split leaves at least 2 models outside every fold."""
  n = folds
  while n - -(-n // folds) < MIN_OUT_OF_FOLD:
    n += 1
  return n


def ulira(unlearned: Any, retrained: Any, *, folds: int = 2, fixed_variance: bool = False,
          seed: int = 0) -> dict[str, float]:
  """U-LiRA statistics of ``[N, E]`` confidences of N unlearned and N retrained models.

  Args:
    unlearned: ``[N, E]`` logit-scaled confidences (margins) of the unlearned models.
    retrained: ``[N, E]`` the same for the retrained models.
    folds: K, the number of cross-fitting folds (>= 2; each fold's complement must hold
      at least 2 models: N >= 4 for K = 2).
    fixed_variance: one variance per population (mean over examples) instead of one per
      example.
    seed: seed of the fold assignment.

  Returns:
    ``{key: float}`` for the keys in :data:`KEYS` (see the module docstring).
  """
  if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
    raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
  u, r = check_populations(unlearned, retrained)
  n = u.shape[0]
  if n < min_models(int(folds)):
    raise ValueError(f"U-LiRA with {folds} folds needs N >= {min_models(int(folds))} models per kind "
                     f"(at least {MIN_OUT_OF_FOLD} outside each fold), got N = {n}")
  fold_of = fold_assignment(n, int(folds), seed)
  with jax.enable_x64(True):
    out = _ulira_kernel(jnp.asarray(u), jnp.asarray(r), jnp.asarray(fold_of), num_folds=int(folds),
                        fixed_variance=bool(fixed_variance))
    out = {k: np.asarray(v) for k, v in out.items()}
  stats = {k: float(out[k]) for k in ("pair_balanced_accuracy", "model_balanced_accuracy")}
  stats.update(_ranking("pair", out["pair_unlearned"].reshape(-1), out["pair_retrained"].reshape(-1)))
  stats.update(_ranking("model", out["model_unlearned"], out["model_retrained"]))
  return {k: stats[k] for k in KEYS}
