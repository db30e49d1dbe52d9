"""Bootstrap uncertainty of the forgetting quality (``docs/evaluations.md`` section 1).

* :func:`model_bootstrap` resamples the N unlearned and, independently, the N retrained
  models with replacement and recomputes every per-example epsilon and F for each draw.
  All ``B x E`` (draw, example) pairs go through the competition kernel of
  :mod:`unlearn_jax.metrics.privacy` as one jitted computation: a ``lax.map`` over
  fixed-size batches of pairs (memory bounded by the batch). A draw is represented by
  its distinct models and their multiplicities (about 63% of N distinct): each pair
  gathers those models' values on the device, and every count becomes a weighted count
  (cumulative multiplicities), every order statistic a search in them. Duplicates are
  ties, counted exactly: each draw equals the plain metric on the explicitly resampled
  arrays bit for bit, for about two thirds of the per-point work.
* :func:`example_bootstrap` resamples forget examples, reusing each example's points.
* :func:`interval` is the percentile interval of either.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.metrics import privacy

DEFAULT_DRAWS = 200
PAIR_BATCH = 8


@dataclasses.dataclass(frozen=True)
class ModelBootstrap:
  """B model-bootstrap draws of the forgetting quality.

  Attributes:
    forgetting_quality: ``[B]`` float64 F of each draw.
    unlearned_idx: ``[B, N]`` int64 model indices of each draw's unlearned population
      (``unlearned_confs[unlearned_idx[b]]`` is draw b's resampled array).
    retrained_idx: ``[B, N]`` int64 the same for the retrained population.
  """
  forgetting_quality: np.ndarray
  unlearned_idx: np.ndarray
  retrained_idx: np.ndarray


def _positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def _weighted(values, weights):
  """A resampled column: its distinct models' values sorted ascending (``+inf`` pads), multiplicities, their cumsum."""
  order = jnp.argsort(values)
  return values[order], weights[order], jnp.cumsum(weights[order])


def _count_lt(v, cum, t, side: str = "left"):
  """Weighted ``#(x < t)`` (``side="right"``: ``#(x <= t)``) of a column from :func:`_weighted`."""
  idx = jnp.searchsorted(v, t, side=side)
  return jnp.where(idx > 0, cum[jnp.maximum(idx - 1, 0)], 0)


def _kth(v, cum, k):
  """The k-th smallest (0-based) value of the resampled column."""
  return v[jnp.searchsorted(cum, k, side="right")]


def _draw_example(u_vals, u_w, r_vals, r_w, table, *, search_steps: int):
  """float32 epsilon of one (example, draw) pair, and whether the grid bounds held.

  The competition kernel (:func:`unlearn_jax.metrics.privacy._example`) on the resampled
  columns, but over each column's distinct models with their multiplicities: counts
  below or at a threshold are cumulative multiplicities, order statistics (min, max,
  medians) are found in the cumulative counts. A draw holds about 63% distinct models,
  so the per-point work shrinks accordingly; the result is the same bit for bit.
  """
  n = table.shape[0] - 1
  u, uw, ucum = _weighted(u_vals, u_w)
  r, rw, rcum = _weighted(r_vals, r_w)
  half = lambda v, c: (_kth(v, c, (n - 1) // 2) + _kth(v, c, n // 2)) / 2
  retrained_pos = half(r, rcum) > half(u, ucum)
  pick = lambda a, b: jnp.where(retrained_pos, a, b)
  pos, pos_w, pos_cum = pick(r, u), pick(rw, uw), pick(rcum, ucum)
  neg, neg_w, neg_cum = pick(u, r), pick(uw, rw), pick(ucum, rcum)
  pos_lo, pos_hi = pos[0], _kth(pos, pos_cum, n - 1)
  neg_lo, neg_hi = neg[0], _kth(neg, neg_cum, n - 1)
  pos_range, neg_range = pos_hi - pos_lo, neg_hi - neg_lo
  larger = jnp.where(pos_range > neg_range, pos_range, neg_range)
  smaller = jnp.where(pos_range > neg_range, neg_range, pos_range)
  peaky = (smaller / larger) < privacy.PEAKY_RATIO
  # Intervals: P (smaller range) is the predicted class.
  p_is_neg = pos_range >= neg_range
  sel = lambda a, b: jnp.where(p_is_neg, a, b)
  p, p_w, p_cum = sel(neg, pos), sel(neg_w, pos_w), sel(neg_cum, pos_cum)
  p_lo, p_hi = sel(neg_lo, pos_lo), sel(neg_hi, pos_hi)
  q, q_w, q_cum = sel(pos, neg), sel(pos_w, neg_w), sel(pos_cum, neg_cum)
  a = (p_lo + smaller) - privacy.BUFFER
  b = p_hi + privacy.BUFFER
  num_right = jnp.ceil((b - a) * privacy.PER_UNIT).astype(jnp.int32)
  i = jnp.arange(privacy.NUM_RIGHT_MAX)
  rights = privacy._linspace_at(i, a, b, num_right)
  starts = (rights - smaller) - privacy.BUFFER
  stops = (rights - smaller) + privacy.BUFFER
  flat_table = table.reshape(-1)
  lt_p = privacy._count_below_rows(p, starts, stops, p_w)
  lt_q = privacy._count_below_rows(q, starts, stops, q_w)
  in_p = jnp.maximum(_count_lt(p, p_cum, rights, "right")[:, None] - lt_p, 0)
  in_q = jnp.maximum(_count_lt(q, q_cum, rights, "right")[:, None] - lt_q, 0)
  eps_int = jnp.where((i < num_right)[:, None], flat_table[in_q * (n + 1) + (n - in_p)], -jnp.inf)
  # Single thresholds.
  lo = jnp.minimum(pos_lo, neg_lo)
  hi = jnp.maximum(pos_hi, neg_hi)
  num_t = jnp.ceil((hi - lo) * privacy.PER_UNIT).astype(jnp.int32)
  thresholds = privacy._single_grid(privacy._single_candidates(pos, neg, lo, hi, num_t, search_steps), lo, hi, num_t)
  k_fn = _count_lt(pos, pos_cum, thresholds)
  k_fp = n - _count_lt(neg, neg_cum, thresholds)
  eps_single = jnp.where(num_t > 0, flat_table[k_fp * (n + 1) + k_fn], -jnp.inf)
  best = jnp.maximum(jnp.max(eps_int), jnp.max(eps_single))
  eps = jnp.where(peaky, privacy.EPSILON_CAP, jnp.clip(jnp.where(best > -jnp.inf, best, 0.0), 0.0, privacy.EPSILON_CAP))
  ok = peaky | ((num_right <= privacy.NUM_RIGHT_MAX) & (num_t < (1 << search_steps)))
  return eps.astype(jnp.float32), ok


@functools.partial(jax.jit, static_argnames=("search_steps", "batch"))
def _draw_epsilons(u_t, r_t, u_models, u_mult, r_models, r_mult, pair_example, pair_draw, table, *,
                   search_steps: int, batch: int):
  """``[P]`` float32 epsilon and grid check of each (example, draw) pair.

  ``u_t``, ``r_t`` are ``[E, N]`` float64; ``*_models`` ``[B, D]`` the distinct model
  indices of each draw and ``*_mult`` ``[B, D]`` their multiplicities (0 pads).
  """

  def one(pair):
    e, b = pair
    u_vals = jnp.where(u_mult[b] > 0, u_t[e][u_models[b]], jnp.inf)
    r_vals = jnp.where(r_mult[b] > 0, r_t[e][r_models[b]], jnp.inf)
    return _draw_example(u_vals, u_mult[b], r_vals, r_mult[b], table, search_steps=search_steps)

  return jax.lax.map(one, (pair_example, pair_draw), batch_size=batch)


def _distinct(idx: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """``[B, width]`` distinct indices of each row and their multiplicities, padded with index 0 and count 0."""
  models = np.zeros((idx.shape[0], width), np.int32)
  mult = np.zeros((idx.shape[0], width), np.int32)
  for row, draw in enumerate(idx):
    values, counts = np.unique(draw, return_counts=True)
    models[row, :len(values)] = values
    mult[row, :len(values)] = counts
  return models, mult


def _draw_all(u: np.ndarray, r: np.ndarray, unlearned_idx: np.ndarray, retrained_idx: np.ndarray,
              batch: int | None = None) -> np.ndarray:
  """``[B, E]`` float64 epsilons of every draw (``u``, ``r`` checked ``[N, E]`` float64)."""
  batch = PAIR_BATCH if batch is None else batch
  n, e = u.shape
  b = unlearned_idx.shape[0]
  distinct = max(len(np.unique(row)) for row in np.concatenate([unlearned_idx, retrained_idx]))
  width = min(n, -(-distinct // 16) * 16)  # a multiple of 16: fewer shapes to compile
  u_models, u_mult = _distinct(unlearned_idx, width)
  r_models, r_mult = _distinct(retrained_idx, width)
  pairs = e * b
  padded = -(-pairs // batch) * batch
  flat = np.arange(padded) % pairs  # the padding repeats real pairs; it is sliced away
  with jax.enable_x64(True):
    eps, ok = _draw_epsilons(jnp.asarray(u.T), jnp.asarray(r.T), jnp.asarray(u_models), jnp.asarray(u_mult),
                             jnp.asarray(r_models), jnp.asarray(r_mult), jnp.asarray(flat // b, jnp.int32),
                             jnp.asarray(flat % b, jnp.int32), jnp.asarray(privacy.epsilon_table(n)),
                             search_steps=privacy.search_steps(u, r), batch=batch)
    eps, ok = np.asarray(eps)[:pairs], np.asarray(ok)[:pairs]
  if not ok.all():
    raise RuntimeError("internal grid-size bound violated; please report with the inputs")
  return eps.astype(np.float64).reshape(e, b).T


def model_bootstrap(unlearned_confs: Any, retrained_confs: Any, num_draws: int = DEFAULT_DRAWS,
                    seed: int = 0) -> ModelBootstrap:
  """F of ``num_draws`` model-bootstrap resamples of both populations.

  Each draw takes N model indices with replacement for the unlearned population and,
  independently, N for the retrained one (``np.random.default_rng(seed)``: all unlearned
  index rows first, then all retrained ones), and recomputes every per-example epsilon
  and F exactly as :func:`unlearn_jax.metrics.forgetting_quality` would on
  ``unlearned_confs[unlearned_idx[b]]`` and ``retrained_confs[retrained_idx[b]]``.

  Args:
    unlearned_confs: ``[N, E]`` logit-scaled confidences of N unlearned models.
    retrained_confs: ``[N, E]`` the same for N retrained models.
    num_draws: B, the number of draws.
    seed: seed of the index draws.

  Returns:
    A :class:`ModelBootstrap`.

  >>> import numpy as np
  >>> u = np.zeros((8, 3)) + 1.0  # collapsed unlearned models: every example peaky, F = 0
  >>> model_bootstrap(u, np.random.default_rng(0).normal(size=(8, 3)), num_draws=4).forgetting_quality.tolist()
  [0.0, 0.0, 0.0, 0.0]
  """
  u, r = privacy._check_pair(unlearned_confs, retrained_confs)
  b = _positive_int("num_draws", num_draws)
  n = u.shape[0]
  rng = np.random.default_rng(seed)
  unlearned_idx = rng.integers(0, n, size=(b, n))
  retrained_idx = rng.integers(0, n, size=(b, n))
  eps = _draw_all(u, r, unlearned_idx, retrained_idx)
  quality = privacy.epsilon_points(eps, n).sum(axis=1) / eps.shape[1]
  return ModelBootstrap(forgetting_quality=quality, unlearned_idx=unlearned_idx, retrained_idx=retrained_idx)


def example_bootstrap(epsilons: Any, num_models: int, num_draws: int = DEFAULT_DRAWS, seed: int = 0) -> np.ndarray:
  """``[B]`` F of forget sets resampled with replacement, each example keeping its epsilon.

  Args:
    epsilons: ``[E]`` per-example epsilons (e.g. ``forgetting_metric(...).epsilons``).
    num_models: N, which fixes the score buckets.
    num_draws: B.
    seed: seed of the index draws (``np.random.default_rng(seed).integers(0, E, (B, E))``).
  """
  eps = np.asarray(epsilons, np.float64)
  if eps.ndim != 1 or eps.shape[0] < 1:
    raise ValueError(f"epsilons must have shape [num_examples] with at least one example, got shape {eps.shape}")
  if not np.all(np.isfinite(eps)):
    raise ValueError("epsilons must be finite")
  n = _positive_int("num_models", num_models)
  b = _positive_int("num_draws", num_draws)
  points = privacy.epsilon_points(eps, n)
  idx = np.random.default_rng(seed).integers(0, eps.shape[0], size=(b, eps.shape[0]))
  return points[idx].sum(axis=1) / eps.shape[0]


def interval(values: Any, level: float = 0.95) -> tuple[float, float]:
  """The central percentile interval of bootstrap values: (2.5th, 97.5th) percentiles at level 0.95.

  >>> interval(np.arange(101.0))
  (2.5, 97.5)
  """
  v = np.asarray(values, np.float64).reshape(-1)
  if v.shape[0] < 1 or not np.all(np.isfinite(v)):
    raise ValueError("interval needs at least one finite value")
  if not 0.0 < float(level) < 1.0:
    raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
  tail = round(50.0 * (1.0 - float(level)), 9)  # 2.5, not 2.5000000000000018
  lo, hi = np.percentile(v, [tail, 100.0 - tail])
  return float(lo), float(hi)
