"""Bootstrap uncertainty of the forgetting quality (``docs/evaluations.md`` section 1).

* :func:`model_bootstrap` resamples the N unlearned and, independently, the N retrained
  models with replacement and recomputes every per-example epsilon and F for each draw.
  A draw is a multiplicity per model (0 for the models it leaves out): each example's
  values are sorted once, and each (example, draw) pair weights them by the draw's
  multiplicities in that order, so every count becomes a weighted count (cumulative
  multiplicities) and every order statistic a search in them, and no draw sorts.
  Duplicates are ties, counted exactly: each draw's points (and F) equal the plain
  metric's on the explicitly resampled arrays. The pairs go through
  :func:`unlearn_jax.metrics.privacy.competition_epsilons` (the metric's geometry, grids
  and counts, with both attack families searched by branch and bound: only the blocks
  of attacks whose bound beats the best epsilon found are counted, a few percent of
  them; each example's 2N values are also pooled and sorted once, with a lattice of cells
  over them, so the interval counts of a draw need no binary search and the block bounds no
  comparison; F needs only each epsilon's score bucket, so each search stops once the bucket
  is settled; ~0.035-0.04x a plain evaluation per draw at N = 512), in batches of
  :data:`PAIR_BATCH` pairs (:data:`FULL_PAIR_BATCH` for ``"full"``; memory bounded by the batch) and blocks of
  :data:`PAIR_BLOCK` pairs that report progress. ``method="full"`` runs the metric's own
  per-example kernel, :func:`unlearn_jax.metrics.privacy.competition_example`, on every
  pair instead, on the draw's distinct models with their multiplicities (every attack
  counted; the same epsilons; ~0.6-0.8x per draw). The bounded
  search needs the epsilon table to be non-increasing in both error counts
  (:func:`unlearn_jax.metrics.privacy.epsilon_table_monotone`, true for every N tried);
  where it is not, ``"full"`` runs.
* :func:`example_bootstrap` resamples forget examples, reusing each example's points.
* :func:`interval` is the percentile interval of either.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.metrics import privacy

DEFAULT_DRAWS = 200
PAIR_BATCH = 16  # pairs whose bounded setup is vmapped together
FULL_PAIR_BATCH = 8  # pairs per lax.map step of the full kernel (~10 MB each at N = 512)
PAIR_BLOCK = 4096  # (example, draw) pairs per kernel call: the unit of progress
MAX_OCCUPANCY = 16  # pooled values per lattice cell the bounded counts compare with; beyond, they search


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


@functools.partial(jax.jit, static_argnames=("search_steps", "batch", "occupancy", "buckets"))
def _draw_bounded(u_sorted, u_order, u_mult, r_sorted, r_order, r_mult, pooled, pair_example, pair_draw, table, *,
                  search_steps: int, batch: int, occupancy: int, buckets: Optional[int]):
  """``[P]`` float32 epsilon and grid check of each (example, draw) pair, by the bounded search.

  ``*_sorted`` are ``[E, N]`` each example's values sorted once, ``*_order`` ``[E, N]`` the
  models in that order, ``*_mult`` ``[B, N]`` each draw's multiplicity of every model: a
  pair is :func:`unlearn_jax.metrics.privacy.competition_epsilons` on the example's sorted
  values weighted by the draw's multiplicities (0 for the models it left out), so no
  draw sorts anything. ``pooled`` holds each example's 2N values pooled and sorted once
  (``"values"`` ``[E, 2N]``, ``"is_unlearned"`` and ``"model"`` of each, and the
  ``"lattice"`` of :func:`unlearn_jax.metrics.privacy.pooled_lattice`); ``occupancy`` (static)
  bounds the values per lattice cell, 0 for binary searches instead. ``buckets`` (static):
  ``None`` for the exact epsilons, else :func:`unlearn_jax.metrics.privacy.num_buckets` of N,
  and each epsilon returned lies in the exact one's score bucket (same points). The setup
  of ``batch`` pairs is vmapped; their searches run one by one.
  """

  def columns(e, b):
    is_u, model = pooled["is_unlearned"][e], pooled["model"][e]
    weights = jnp.where(is_u, u_mult[b][model], r_mult[b][model])
    pool = {"values": pooled["values"][e], "is_unlearned": is_u, "weights": weights,
            "lattice": jax.tree.map(lambda x: x[e], pooled["lattice"])}
    return u_sorted[e], u_mult[b][u_order[e]], r_sorted[e], r_mult[b][r_order[e]], pool

  def some(pairs):
    *cols, pool = jax.vmap(columns)(*pairs)
    out = privacy.competition_epsilons(*cols, table, search_steps=search_steps, presorted=True, pooled=pool,
                                       occupancy=occupancy, buckets=buckets)
    return out["epsilon"], out["ok"]

  shape = (-1, batch)
  eps, ok = jax.lax.map(some, (pair_example.reshape(shape), pair_draw.reshape(shape)))
  return eps.reshape(-1), ok.reshape(-1)


_pooled_lattices = jax.jit(jax.vmap(privacy.pooled_lattice))


@functools.partial(jax.jit, static_argnames=("search_steps", "batch"))
def _draw_full(u_t, r_t, u_models, u_mult, r_models, r_mult, pair_example, pair_draw, table, *,
               search_steps: int, batch: int):
  """``[P]`` float32 epsilon and grid check of each (example, draw) pair, every attack counted.

  ``u_t``, ``r_t`` are ``[E, N]`` float64; ``*_models`` ``[B, D]`` the distinct model
  indices of each draw and ``*_mult`` ``[B, D]`` their multiplicities (0 pads). Each pair
  is :func:`unlearn_jax.metrics.privacy.competition_example` on the draw's distinct
  models weighted by their multiplicities.
  """

  def one(pair):
    e, b = pair
    u_vals = jnp.where(u_mult[b] > 0, u_t[e][u_models[b]], jnp.inf)
    r_vals = jnp.where(r_mult[b] > 0, r_t[e][r_models[b]], jnp.inf)
    out = privacy.competition_example(u_vals, u_mult[b], r_vals, r_mult[b], table, search_steps=search_steps)
    return out["epsilon"], out["ok"]

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
              batch: int | None = None, progress: Optional[Callable[[int, int], None]] = None,
              method: str = "bounded", score_only: bool = False) -> np.ndarray:
  """``[B, E]`` float64 epsilons of every draw (``u``, ``r`` checked ``[*, E]`` float64).

  Draw b scores ``u[unlearned_idx[b]]`` against ``r[retrained_idx[b]]``: N models each (the
  rows of the index arrays), taken from populations of N or more models. The ``B x E`` pairs
  run in blocks of one fixed size (one compilation); ``progress(done, total)`` is called with
  the pairs done after each block. ``score_only`` (bounded method): each epsilon need only
  lie in the exact one's score bucket (the same points; the search stops once the bucket
  is settled); the full method is exact either way.
  """
  n, e = unlearned_idx.shape[1], u.shape[1]  # N models per set, E examples
  m = u.shape[0]  # rows of each pool (the caller pads both to one count)
  if method not in ("bounded", "full"):
    raise ValueError(f"method must be 'bounded' or 'full', got {method!r}")
  if not privacy.epsilon_table_monotone(n):
    method = "full"  # the bounds need a monotone table; the full count needs nothing
  if batch is None:
    batch = PAIR_BATCH if method == "bounded" else FULL_PAIR_BATCH

  b = unlearned_idx.shape[0]
  pairs = e * b
  block = min(-(-pairs // batch) * batch, PAIR_BLOCK)
  blocks = -(-pairs // block)
  flat = np.arange(blocks * block) % pairs  # the padding repeats real pairs; it is sliced away
  eps_parts, ok_parts = [], []
  with jax.enable_x64(True):
    if method == "bounded":
      multiplicity = lambda idx: np.stack([np.bincount(row, minlength=m) for row in idx]).astype(np.int32)
      u_order, r_order = np.argsort(u.T, axis=1, kind="stable"), np.argsort(r.T, axis=1, kind="stable")
      # Each example's 2m values pooled and sorted once, with their population and model, and a lattice over them.
      both = np.concatenate([u.T, r.T], axis=1)
      order = np.argsort(both, axis=1, kind="stable")
      values = jnp.asarray(np.take_along_axis(both, order, 1))
      lattice, occupancy = _pooled_lattices(values)
      occupancy = int(np.max(np.asarray(occupancy)))
      occupancy = occupancy + occupancy % 2 if occupancy <= MAX_OCCUPANCY else 0  # many ties: binary searches
      pooled = {"values": values, "is_unlearned": jnp.asarray(order < m),
                "model": jnp.asarray((order % m).astype(np.int32)), "lattice": lattice}
      args = (jnp.asarray(np.take_along_axis(u.T, u_order, 1)), jnp.asarray(u_order.astype(np.int32)),
              jnp.asarray(multiplicity(unlearned_idx)), jnp.asarray(np.take_along_axis(r.T, r_order, 1)),
              jnp.asarray(r_order.astype(np.int32)), jnp.asarray(multiplicity(retrained_idx)), pooled)
      kernel = functools.partial(_draw_bounded, occupancy=occupancy,
                                 buckets=privacy.num_buckets(n) if score_only else None)
    else:
      distinct = max(len(np.unique(row)) for row in np.concatenate([unlearned_idx, retrained_idx]))
      width = min(n, -(-distinct // 16) * 16)  # a multiple of 16: fewer shapes to compile
      u_models, u_mult = _distinct(unlearned_idx, width)
      r_models, r_mult = _distinct(retrained_idx, width)
      args = (jnp.asarray(u.T), jnp.asarray(r.T), jnp.asarray(u_models), jnp.asarray(u_mult), jnp.asarray(r_models),
              jnp.asarray(r_mult))
      kernel = _draw_full
    table = jnp.asarray(privacy.epsilon_table(n))
    steps = privacy.search_steps(u, r)
    for k in range(blocks):
      part = flat[k * block:(k + 1) * block]
      eps, ok = kernel(*args, jnp.asarray(part // b, jnp.int32), jnp.asarray(part % b, jnp.int32), table,
                       search_steps=steps, batch=batch)
      eps_parts.append(np.asarray(eps))
      ok_parts.append(np.asarray(ok))
      if progress is not None:
        progress(min((k + 1) * block, pairs), pairs)
  eps, ok = np.concatenate(eps_parts)[:pairs], np.concatenate(ok_parts)[:pairs]
  if not ok.all():
    raise RuntimeError("internal grid-size bound violated; please report with the inputs")
  return eps.astype(np.float64).reshape(e, b).T


def model_bootstrap(unlearned_confs: Any, retrained_confs: Any, num_draws: int = DEFAULT_DRAWS, seed: int = 0,
                    progress: Optional[Callable[[int, int], None]] = None, method: str = "bounded") -> ModelBootstrap:
  """F of ``num_draws`` model-bootstrap resamples of both populations.

  Each draw takes N model indices with replacement for the unlearned population and,
  independently, N for the retrained one (``np.random.default_rng(seed)``: all unlearned
  index rows first, then all retrained ones), and recomputes every per-example score
  bucket and F exactly as :func:`unlearn_jax.metrics.forgetting_quality` would on
  ``unlearned_confs[unlearned_idx[b]]`` and ``retrained_confs[retrained_idx[b]]``.

  Args:
    unlearned_confs: ``[N, E]`` logit-scaled confidences of N unlearned models.
    retrained_confs: ``[N, E]`` the same for N retrained models.
    num_draws: B, the number of draws.
    seed: seed of the index draws.
    progress: optional ``progress(done, total)`` callback, called with the (example,
      draw) pairs done after each block of :data:`PAIR_BLOCK` pairs.
    method: ``"bounded"`` (default: interval attacks searched by branch and bound,
      :func:`unlearn_jax.metrics.privacy.competition_epsilon`, each search stopped once the
      epsilon's score bucket is settled) or ``"full"`` (every attack counted, the metric's
      :func:`unlearn_jax.metrics.privacy.competition_example`); the same F bit for bit,
      ``"full"`` over 20 times slower.

  Returns:
    A :class:`ModelBootstrap`.

  >>> import numpy as np
  >>> u = np.zeros((8, 3)) + 1.0  # collapsed unlearned models: every example peaky, F = 0
  >>> model_bootstrap(u, np.random.default_rng(0).normal(size=(8, 3)), num_draws=4).forgetting_quality.tolist()
  [0.0, 0.0, 0.0, 0.0]
  """
  u, r = privacy.check_pair(unlearned_confs, retrained_confs)
  b = _positive_int("num_draws", num_draws)
  n = u.shape[0]
  rng = np.random.default_rng(seed)
  unlearned_idx = rng.integers(0, n, size=(b, n))
  retrained_idx = rng.integers(0, n, size=(b, n))
  eps = _draw_all(u, r, unlearned_idx, retrained_idx, progress=progress, method=method, score_only=True)
  quality = privacy.epsilon_points(eps, n).sum(axis=1) / eps.shape[1]
  return ModelBootstrap(forgetting_quality=quality, unlearned_idx=unlearned_idx, retrained_idx=retrained_idx)


def subset_epsilons(unlearned_confs: Any, retrained_confs: Any, unlearned_idx: Any, retrained_idx: Any,
                    progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
  """``[B, E]`` float64 per-example epsilons of the metric on ``B`` chosen sets of models.

  Row b equals ``per_example_epsilons(unlearned_confs[unlearned_idx[b]],
  retrained_confs[retrained_idx[b]])`` bit for bit, computed as the model bootstrap computes a
  draw (values sorted once, a set is a multiplicity per model, bounded search): the sets may
  repeat models (a bootstrap draw) or pick N of a larger pool (a split of a permutation test).

  Args:
    unlearned_confs: ``[M_u, E]`` confidences of the unlearned models to choose from.
    retrained_confs: ``[M_r, E]`` the same for retrained models.
    unlearned_idx: ``[B, N]`` integer row indices into ``unlearned_confs``, N >= 2.
    retrained_idx: ``[B, N]`` the same into ``retrained_confs``.
    progress: optional ``progress(done, total)`` callback over (example, set) pairs.
  """
  return _subsets(unlearned_confs, retrained_confs, unlearned_idx, retrained_idx, progress, score_only=False)


def subset_points(unlearned_confs: Any, retrained_confs: Any, unlearned_idx: Any, retrained_idx: Any,
                  progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
  """``[B, E]`` float64 per-example points of the metric on ``B`` chosen sets of models.

  ``epsilon_points`` of :func:`subset_epsilons` (same arguments), found faster: each
  search stops once the epsilon's score bucket is settled, which is all the points need.
  """
  eps = _subsets(unlearned_confs, retrained_confs, unlearned_idx, retrained_idx, progress, score_only=True)
  return privacy.epsilon_points(eps, np.shape(unlearned_idx)[1])  # the shape was checked


def _subsets(unlearned_confs, retrained_confs, unlearned_idx, retrained_idx, progress, score_only: bool):
  """:func:`subset_epsilons`'s checks and draws; ``score_only`` as in :func:`_draw_all`."""
  u, r = privacy.check_pair(unlearned_confs, retrained_confs, same_models=False)
  ui, ri = np.asarray(unlearned_idx), np.asarray(retrained_idx)
  for name, idx, rows in (("unlearned_idx", ui, u.shape[0]), ("retrained_idx", ri, r.shape[0])):
    if idx.ndim != 2 or idx.dtype.kind not in "iu" or idx.size == 0 or idx.min() < 0 or idx.max() >= rows:
      raise ValueError(f"{name} must be a non-empty [B, N] integer array of rows in [0, {rows}), got shape "
                       f"{idx.shape} and dtype {idx.dtype}")
  if ui.shape != ri.shape or not 2 <= ui.shape[1] <= privacy.MAX_NUM_MODELS:
    raise ValueError(f"both index arrays need one shape [B, N] with 2 <= N <= {privacy.MAX_NUM_MODELS}, got "
                     f"{ui.shape} and {ri.shape}")
  # the kernel pairs columns of one length: the smaller pool is padded with repeats of its own rows, which no
  # index reaches (weight 0, and a weight-0 value counts nowhere)
  rows = max(u.shape[0], r.shape[0])
  pad = lambda x: np.concatenate([x, x[np.arange(rows - x.shape[0]) % x.shape[0]]])
  return _draw_all(pad(u), pad(r), ui.astype(np.int64), ri.astype(np.int64), progress=progress,
                   score_only=score_only)


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
