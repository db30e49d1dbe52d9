"""Slow, obviously-correct NumPy oracle for the forgetting-quality metric.

This module is the yardstick the fast kernel in :mod:`unlearn_jax.metrics.privacy` is
tested and benchmarked against. It follows the competition metric specification (the scoring
rule of the NeurIPS 2023 Machine Unlearning Competition, arXiv 2406.09073) literally:
one forget example at a time, every threshold of both attack families compared with
every model's confidence, rates as float32 ``count / N``, the epsilon formula in float32,
the single-threshold grid rounded to float32 and the interval grids in float64.

It is quadratic in the grid size times ``N`` (about 160,000 x N comparisons per example)
and is never used by the library itself. ``tests/reference.py`` re-exports it.
"""

from __future__ import annotations

import math

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
PER_UNIT = 100
BUFFER = 2.0
NUM_LEFT = 400
PEAKY_RATIO = 0.01


def reference_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """``log(p_y + 1e-45) - log(sum_{k != y} p_k + 1e-45)`` from max-shifted float32 exp."""
  z = np.asarray(logits, np.float32)
  z = z - z.max(axis=-1, keepdims=True)
  probs = np.exp(z).astype(np.float64)
  probs /= probs.sum(axis=-1, keepdims=True)
  labels = np.asarray(labels)
  rows = np.arange(z.shape[0])
  p_true = probs[rows, labels].copy()
  probs[rows, labels] = 0.0
  p_wrong = probs.sum(axis=-1)
  return np.log(p_true + 1e-45) - np.log(p_wrong + 1e-45)


def _linspace(start: float, stop: float, num: int) -> np.ndarray:
  return np.linspace(np.float64(start), np.float64(stop), num)


def _attack_epsilons(fpr: np.ndarray, fnr: np.ndarray) -> np.ndarray:
  """Per-attack epsilon from float32 rates; NaN marks a discarded attack."""
  fpr = fpr.astype(np.float32)
  fnr = fnr.astype(np.float32)
  one = np.float32(1.0 - DELTA)
  with np.errstate(divide="ignore", invalid="ignore"):
    t1 = np.log(one - fpr) - np.log(fnr)
    t2 = np.log(one - fnr) - np.log(fpr)
  both_nan = np.isnan(t1) & np.isnan(t2)
  eps = np.where(np.isnan(t1), t2, np.where(np.isnan(t2), t1, np.maximum(t1, t2)))
  eps = np.maximum(eps, np.float32(0.0))
  eps = np.where(both_nan, np.nan, eps)
  eps = np.where((fpr * fnr == 0), np.nan, eps)
  eps = np.where((fpr + fnr == 0), np.inf, eps)
  return eps.astype(np.float32)


def reference_example(unlearned: np.ndarray, retrained: np.ndarray) -> dict:
  """Epsilon of one forget example from its ``[N]`` unlearned and retrained confidences.

  Returns a dict with ``epsilon`` (clipped to [0, 50]), ``peaky``, ``family``
  (``"single"``, ``"interval"`` or ``None``), ``fpr``, ``fnr`` of the best attack
  (first maximum, intervals before single thresholds, as the organizers order them).
  """
  u = np.asarray(unlearned, np.float64)
  r = np.asarray(retrained, np.float64)
  n = u.shape[0]
  if np.median(r) > np.median(u):
    pos, neg = r, u
  else:
    pos, neg = u, r
  pos_range = pos.max() - pos.min()
  neg_range = neg.max() - neg.min()
  larger = pos_range if pos_range > neg_range else neg_range
  smaller = neg_range if pos_range > neg_range else pos_range
  with np.errstate(invalid="ignore", divide="ignore"):
    ratio = np.float64(smaller) / np.float64(larger)
  if ratio < PEAKY_RATIO:
    return {"epsilon": EPSILON_CAP, "peaky": True, "family": None, "fpr": np.nan, "fnr": np.nan}

  fprs, fnrs, family = [], [], []
  # Interval attacks: P is the column with the smaller range, predicted iff l <= c <= r.
  p_col, q_col = (neg, pos) if pos_range >= neg_range else (pos, neg)
  width = smaller
  a = p_col.min() + width - BUFFER
  b = p_col.max() + BUFFER
  rights = _linspace(a, b, int(np.ceil((b - a) * PER_UNIT)))
  for right in rights:
    lefts = _linspace(right - width - BUFFER, right - width + BUFFER, NUM_LEFT)
    in_p = (lefts[:, None] <= p_col[None, :]) & (p_col[None, :] <= right)
    in_q = (lefts[:, None] <= q_col[None, :]) & (q_col[None, :] <= right)
    fnrs.append(np.float32(n - in_p.sum(1)) / np.float32(n))
    fprs.append(np.float32(in_q.sum(1)) / np.float32(n))
    family.append(np.ones(NUM_LEFT, bool))
  # Single thresholds: predicted positive iff c >= t, t a float32 grid over the pooled range.
  pooled = np.concatenate([pos, neg])
  lo, hi = pooled.min(), pooled.max()
  num = int(np.ceil((hi - lo) * PER_UNIT))
  thresholds = _linspace(lo, hi, num).astype(np.float32).astype(np.float64)
  fnrs.append(np.float32((pos[None, :] < thresholds[:, None]).sum(1)) / np.float32(n))
  fprs.append(np.float32((neg[None, :] >= thresholds[:, None]).sum(1)) / np.float32(n))
  family.append(np.zeros(num, bool))

  fpr = np.concatenate(fprs).astype(np.float32)
  fnr = np.concatenate(fnrs).astype(np.float32)
  is_interval = np.concatenate(family)
  eps = _attack_epsilons(fpr, fnr)
  keep = ~np.isnan(eps)
  if not keep.any():
    # The organizers assert here; we score such an example as epsilon 0.
    return {"epsilon": 0.0, "peaky": False, "family": None, "fpr": np.nan, "fnr": np.nan}
  best = int(np.argmax(np.where(keep, eps, -np.inf)))
  value = float(np.clip(eps[best], 0.0, EPSILON_CAP))
  return {"epsilon": value, "peaky": False, "family": "interval" if is_interval[best] else "single",
          "fpr": float(fpr[best]), "fnr": float(fnr[best])}


def reference_epsilons(unlearned_confs: np.ndarray, retrained_confs: np.ndarray) -> np.ndarray:
  """Per-example epsilons ``[E]`` of ``[N, E]`` confidences, one example at a time."""
  u = np.asarray(unlearned_confs, np.float64)
  r = np.asarray(retrained_confs, np.float64)
  return np.array([reference_example(u[:, s], r[:, s])["epsilon"] for s in range(u.shape[1])])


def reference_points(epsilons: np.ndarray, num_models: int) -> np.ndarray:
  """Points of each epsilon: bucket k = [0.5k, 0.5k + 0.5) is worth 2**-k while 0.5k + 0.5 <= ceil(ln(N-1))."""
  top = math.ceil(math.log(num_models - 1)) if num_models > 2 else 0
  out = []
  for e in np.asarray(epsilons, np.float64):
    start, value, got = 0.0, 1.0, 0.0
    while start + 0.5 <= top:
      if e < start + 0.5:
        got = value
        break
      start += 0.5
      value /= 2
    out.append(got)
  return np.array(out)


def reference_forgetting_quality(unlearned_confs: np.ndarray, retrained_confs: np.ndarray) -> float:
  """Mean points over examples of the reference epsilons."""
  eps = reference_epsilons(unlearned_confs, retrained_confs)
  return float(reference_points(eps, np.shape(unlearned_confs)[0]).sum() / eps.shape[0])
