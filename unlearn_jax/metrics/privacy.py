"""Per-example epsilons and the forgetting quality of the NeurIPS 2023 unlearning competition.

Semantics follow the competition metric specification (``docs/metric.md``): the organizers' scoring rule
(arXiv 2406.09073; released as ``google-deepmind/unlearning_evaluation``, ``metric.py``),
reproduced exactly (same per-example epsilons, same score) but jitted and vectorized.
:mod:`unlearn_jax.metrics.reference` is the slow oracle it is tested against.

Design notes (what runs where):

* Host (NumPy): input validation, the float32 epsilon table, the static number of
  binary-search steps over the single-threshold grid of each chunk of examples, the score buckets (and, for the
  ``"bucket"`` method only, the chunk's cell occupancy from a small jitted pre-pass).
* Device (one jitted kernel, x64 scoped with ``jax.enable_x64`` around the call, never
  global): everything per example, vmapped over a fixed-size chunk of examples. The
  example axis is padded to the chunk size, so a new number of examples never retraces;
  chunk sizes are powers of two up to ``chunk_size``, and the search steps over the
  single-threshold grid are 11 for ranges below 20.47 and 28 beyond (two compilations).

Method. An attack's epsilon depends only on two integer counts, the number of
negatives predicted positive ``k_fp`` and of positives predicted negative ``k_fn``
(rates are ``count / N`` in float32). So ``eps[k_fp, k_fn]`` is tabulated once per N on
the host with the exact float32 formula and the discard rules (-inf marks a discarded
attack, +inf perfect separation), and every attack becomes one gather.

* Single thresholds (``T = ceil(range * 100)`` float32 grid points; ~20,724 after
  saturation, but up to 2e8 for accepted inputs of range 2e6): the grid is never
  materialised. The counts ``#(pos < t)``, ``#(neg < t)`` are constant between two
  consecutive pooled data values, and the grid is non-decreasing in its index, so the
  first maximum over the whole grid sits at the first grid point of one of the ``2N + 1``
  gaps between pooled values. That point's index is the number of grid points ``<= v``
  for the gap's lower value ``v``, found by a binary search over the grid index (the
  grid point recomputed bit for bit), then the ordinary counts are taken at those
  ``2N + 1`` candidate thresholds only. Exact (the same epsilon, best attack and
  threshold as scanning every grid point); O(N log T) time and O(N) memory per example,
  so neither grows with the confidences' range.
* Intervals (R = 400 or 401 right edges, 400 left edges each, ~160,000 per example):
  ``count(l <= x <= r) = max(0, #(x <= r) - #(x < l))`` on sorted columns; the
  ``max`` handles the empty intervals (``l > r``) that occur when ``w < 2``.
  ``#(x <= r)`` is a binary search over 401 points. ``#(x < l)`` for the 160,000 left
  edges (count_method ``"lattice"``, the default) is not searched: each right edge's
  left edges are an arithmetic progression (numpy's ``linspace``: ``j * step + start``,
  last point ``stop``), so each data point's number of left edges ``<= x`` is
  ``floor((x - start) / step) + 1``, corrected by one exact comparison on each side
  against the grid value recomputed bit for bit as numpy does it. A histogram of those
  ranks per right edge and a cumulative sum give ``#(x < l_j)`` for all 400 left edges
  of the row: O(N + 400) per right edge, no data-dependent sizes. The correction is
  exact while the estimate is off by at most one rank, which holds for ``|c| <= 1e6``
  (rank errors ~1e-8 there; inputs beyond are rejected).
  Two exact alternatives are kept and tested: ``"bucket"`` (a uniform lattice of 8,192
  cells over the ~8-wide span of all left edges; the cell index ``floor((v - lo) * M /
  span)`` is monotone, so only the K points sharing a query's cell are compared, K the
  largest occupancy, measured by a jitted pre-pass and rounded up) and ``"search"`` (a
  binary search per left edge). Measured on the shared 2-core CPU (N = 512, CPU ms per
  example): lattice ~8-9, bucket ~14 (K = 4), search ~15-18.

Epsilon only, by branch and bound (:func:`competition_epsilon`, the model bootstrap's
kernel). The table is non-increasing in ``k_fp`` and in ``k_fn`` where both are >= 1
(:func:`epsilon_table_monotone` checks it), so a set of attacks with at least ``a`` false
positives and ``b`` false negatives scores at most ``table[max(a, 1), max(b, 1)]``
(``+inf`` if both may be 0). Interval attacks come in blocks of 16 right x 16 left edges
(every attack of a block lies in its widest interval and contains its narrowest), single
thresholds in blocks of 16 sorted values per column (their candidates lie between the
first and the last value's); blocks are opened, highest bound first, until no bound beats
the best epsilon found. An interval block opened is cut into 8 x 8 sub-blocks with their
own (tighter) bounds, and only the sub-blocks whose bound beats the best epsilon are
counted exactly (at N = 512 about as many sub-blocks are counted as blocks were before, at a
quarter of the attacks each). Counts in the merged columns are binary searches, or, for the
model bootstrap (whose draws share each example's pooled sorted values), a lattice of cells
over those values (:func:`pooled_lattice`: the cells below a query's, plus at most a few
comparisons in its own cell; the block bounds take the cells alone, :func:`_cell_count`).
With ``buckets`` the search seeks only the epsilon's score bucket (all F needs): a block
is opened only if its bound reaches the next bucket's lower edge above the best epsilon
found (:func:`_stake`), and the epsilon returned is an attack's in the maximum's bucket.
A column's values left out of a bootstrap draw may stay in place with weight 0: the order
statistics are weighted searches, and their single-threshold candidates are grid points
too, so they cannot raise the maximum. The
same geometry, grids, counts and table as :func:`competition_example`, so the same epsilon
bit for bit; at N = 512 a few percent of the blocks are opened.

XLA's CPU backend contracts ``a * b + c`` into a fused multiply-add, and rewrites a division
by a broadcast value (``(stop - start) / 399``) into a multiplication by its reciprocal; the
grids would then differ from numpy's by an ulp (and a count flips where a data point sits
on a grid point), so products are passed through :func:`_rounded` and divisions through
:func:`_divide` first.

The grids are float64 where the organizers' are, and the single-threshold grid is the
float64 linspace rounded to float32 and compared with float64 data, as theirs is.
Counting on sorted data is exact: the epsilons equal the brute-force ones bit for bit.

If no attack survives the discard rule (the organizers' code fails there with an
assertion), the example's epsilon is 0.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
PER_UNIT = 100
BUFFER = 2.0
NUM_LEFT = 400
NUM_RIGHT_MAX = 401
PEAKY_RATIO = 0.01
MAX_ABS_CONFIDENCE = 1e6
MIN_SEARCH_STEPS = 11
# competition_epsilon: interval attacks bounded in blocks of BOUND_BLOCK x BOUND_BLOCK, this many opened at a time,
# each cut into BOUND_SUB_BLOCK x BOUND_SUB_BLOCK sub-blocks (bounded again, counted one at a time); single thresholds
# in blocks of SINGLE_BLOCK sorted values.
BOUND_BLOCK = 16
BOUND_BLOCKS_PER_STEP = 4
BOUND_SUB_BLOCK = 8
SINGLE_BLOCK = 16
BOUND_MARGIN = 1e-7  # relative widening of a block's extreme left edges (their order across rows holds by ~1e8 ulps)
# N is bounded: the epsilon table is [N+1, N+1] float32 (64 MiB at 4096, built with a few temporaries of
# that size), and the competition used N = 512. 32,768 models would need 4 GiB per temporary.
MAX_NUM_MODELS = 4096
# T < 2**28 for every accepted input: ranges are at most 2 * MAX_ABS_CONFIDENCE.
MAX_SEARCH_STEPS = int(np.ceil(2 * MAX_ABS_CONFIDENCE * PER_UNIT)).bit_length()

FAMILY_NONE = 0
FAMILY_INTERVAL = 1
FAMILY_SINGLE = 2
FAMILY_NAMES = {FAMILY_NONE: "none", FAMILY_INTERVAL: "interval", FAMILY_SINGLE: "single"}


@dataclasses.dataclass(frozen=True)
class MetricResult:
  """Everything the forgetting-quality metric computes, per example, as host NumPy arrays.

  Attributes:
    forgetting_quality: mean points over examples (the competition's F).
    epsilons: ``[E]`` float64 per-example epsilon in [0, 50].
    points: ``[E]`` float64 points of each epsilon (``2**-k`` for bucket k, 0 beyond).
    peaky: ``[E]`` bool, the degenerate-range rule fired (epsilon 50, no attack run).
    family: ``[E]`` int8 family of the best attack: 0 none (peaky or nothing
      survived), 1 interval, 2 single threshold.
    fpr, fnr: ``[E]`` float32 rates of the best attack (NaN where family is 0). For
      intervals the positive class is the column with the smaller range.
    thresholds: ``[E, 2]`` float64 best attack: ``(l, r)`` for an interval, ``(t, inf)``
      for a single threshold, NaN where family is 0.
    retrained_is_positive: ``[E]`` bool, median(retrained) > median(unlearned).
    interval_positive_is_retrained: ``[E]`` bool, the interval family's predicted class
      (the smaller-range column) is the retrained one.
    num_models: N.
  """
  forgetting_quality: float
  epsilons: np.ndarray
  points: np.ndarray
  peaky: np.ndarray
  family: np.ndarray
  fpr: np.ndarray
  fnr: np.ndarray
  thresholds: np.ndarray
  retrained_is_positive: np.ndarray
  interval_positive_is_retrained: np.ndarray
  num_models: int

  @property
  def num_examples(self) -> int:
    return int(self.epsilons.shape[0])


@functools.lru_cache(maxsize=16)
def epsilon_table(num_models: int) -> np.ndarray:
  """``[N+1, N+1]`` float32 epsilon of an attack with ``k_fp`` false positives and ``k_fn`` false negatives.

  ``+inf`` where both are 0 (perfect separation), ``-inf`` where the attack is discarded
  (exactly one of them 0, or both log terms NaN), otherwise
  ``max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR))`` (NaN terms
  ignored) clipped below at 0, all in float32 with rates ``float32(count) / float32(N)``.
  """
  n = int(num_models)
  counts = np.arange(n + 1, dtype=np.float32)
  rate = counts / np.float32(n)
  fpr = rate[:, None]
  fnr = rate[None, :]
  one = np.float32(1.0 - DELTA)
  with np.errstate(divide="ignore", invalid="ignore"):
    t1 = np.log(one - fpr) - np.log(fnr)
    t2 = np.log(one - fnr) - np.log(fpr)
  eps = np.fmax(t1, t2)  # NaN-ignoring max; NaN only where both are NaN.
  eps = np.where(np.isnan(eps), -np.inf, np.maximum(eps, np.float32(0.0)))
  eps = np.where(fpr * fnr == 0, -np.inf, eps)
  eps = np.where((fpr + fnr) == 0, np.inf, eps)
  table = eps.astype(np.float32)
  table.setflags(write=False)
  return table


def num_buckets(num_models: int) -> int:
  """Buckets of width 0.5 whose upper edge is ``<= ceil(ln(N - 1))``: 14 at N = 512, 0 at N = 2."""
  top = float(np.ceil(np.log(np.float64(num_models - 1)))) if num_models > 2 else 0.0
  return max(0, int(2 * top))


def epsilon_points(epsilons: Any, num_models: int) -> np.ndarray:
  """Points of each epsilon: ``2**-k`` for ``eps`` in ``[0.5k, 0.5k + 0.5)`` if k < num_buckets, else 0."""
  eps = np.asarray(epsilons, np.float64)
  k = np.floor(2.0 * eps)
  return np.where(k < num_buckets(num_models), np.exp2(-np.minimum(k, 1000.0)), 0.0)


# ----------------------------------------------------------------------------------------
# The jitted kernel.


def _rounded(p):
  """``p`` itself, but opaque to the compiler, so ``_rounded(a * b) + c`` is never contracted into an FMA.

  XLA's CPU backend contracts a fused ``a * b + c`` into one fused multiply-add, which
  skips the rounding of the product and moves numpy's grid points by an ulp. An OR
  with ``isnan(p)`` (zero unless ``p`` is NaN) on the bit pattern forces the rounding.
  """
  ity = jnp.int64 if p.dtype == jnp.float64 else jnp.int32
  bits = jax.lax.bitcast_convert_type(p, ity) | (p != p).astype(ity)
  return jax.lax.bitcast_convert_type(bits, p.dtype)


def _divide(num, den):
  """``num / den`` correctly rounded, as numpy divides, whatever the shapes.

  XLA's algebraic simplifier rewrites a division by a broadcast scalar (a constant such
  as 399, or one value per row spread over a row) into a multiplication by its
  reciprocal, which is off by an ulp for about a third of the quotients; no XLA flag
  turns that off. A divisor that is an elementwise function of the numerator itself
  (``den`` where ``num`` is not NaN, 1 where it is: the same quotient) is not a
  broadcast, so the division stays a division.
  """
  den = jnp.where(num != num, jnp.ones((), num.dtype), jnp.asarray(den).astype(num.dtype))
  return num / den


def linspace_at(idx, start, stop, num):
  """numpy's ``linspace(start, stop, num)[idx]``: ``idx * ((stop - start) / (num - 1)) + start``, last = stop.

  As numpy, a one-point grid is ``[start]``.
  """
  step = _divide(stop - start, jnp.maximum(num - 1, 1))
  return jnp.where((idx == num - 1) & (num > 1), stop, _rounded(idx.astype(start.dtype) * step) + start)


def _count_below_rows(x, start, stop, weights=None):
  """``[rows, NUM_LEFT]`` counts ``#(x < l_j)`` for each row's left grid ``linspace(start, stop, NUM_LEFT)``.

  ``x`` is ``[N]``; ``start``, ``stop`` are ``[rows]``. For each data point, the number of
  left edges ``<= x`` is found arithmetically and fixed up against the exact grid values;
  a per-row histogram of those numbers, cumulated, gives the counts. With ``weights``
  (``[N]`` int32 multiplicities) each point counts that many times; ``+inf`` points
  count nowhere.
  """
  last = NUM_LEFT - 1
  start = start[:, None]
  stop = stop[:, None]
  step = _divide(stop - start, last)
  xs = x[None, :]
  guess = jnp.floor((xs - start) / step)
  g = jnp.clip(guess, -1, last).astype(jnp.int32)

  def grid(j):
    return jnp.where(j == last, stop, _rounded(j.astype(start.dtype) * step) + start)

  below = (g >= 0) & (grid(g) > xs)
  above = (g + 1 <= last) & (grid(g + 1) <= xs)
  num_le = g + 1 - below.astype(jnp.int32) + above.astype(jnp.int32)  # in [0, NUM_LEFT]
  rows = start.shape[0]
  hist = jnp.zeros((rows, NUM_LEFT + 1), jnp.int32)
  hist = hist.at[jnp.arange(rows)[:, None], num_le].add(1 if weights is None else weights[None, :])
  # XLA's CPU cumsum is slower here than a log-depth scan.
  return jax.lax.associative_scan(jnp.add, hist, axis=1)[:, :NUM_LEFT]


NUM_CELLS = 8192


def _count_below_bucket(p, q, lefts, lo, hi, valid_rows, occupancy_pad):
  """``#(p < l)`` and ``#(q < l)`` for every left edge through a uniform lattice of cells over ``[lo, hi]``.

  The cell index ``floor((v - lo) * M / (hi - lo))`` is a monotone function of ``v``, so
  a point in a lower cell than ``l`` is below it and one in a higher cell is above it;
  only points sharing ``l``'s cell are compared with it: ``occupancy_pad`` (static)
  candidates per query. Also returns the largest occupancy, which must not exceed it.
  """
  m = NUM_CELLS
  cell = _lattice_cells(lo, hi)
  cq = cell(lefts)
  in_range = jnp.all(((cq >= 0) & (cq <= m)) | ~valid_rows[:, None])

  def count(x):
    below, occupancy = _cell_starts(cell(x))
    first = below[1:m + 2]  # index of the first point of cells 0..m
    size = below[2:m + 3] - first
    acc = below[cq + 1]
    for k in range(occupancy_pad):
      # the k-th smallest point of each cell, +inf where the cell has no k-th point
      kth = jnp.where(k < size, x[jnp.minimum(first + k, x.shape[0] - 1)], jnp.inf)
      kth = jax.lax.optimization_barrier(kth)
      acc = acc + (kth[jnp.clip(cq, 0, m)] < lefts).astype(jnp.int32)
    return acc, occupancy

  lt_p, occ_p = count(p)
  lt_q, occ_q = count(q)
  return lt_p, lt_q, in_range, jnp.maximum(occ_p, occ_q)


def _column(values, weights, presorted: bool = False):
  """A column as its values sorted ascending (``+inf`` pads last), their multiplicities and cumulative multiplicities.

  ``weights=None`` is every value once: then the multiplicities are ``None`` and every
  count below is the plain index (no cumulative gathers). ``presorted``: the values
  already ascend (absent ones may stay in place with multiplicity 0), nothing is sorted.
  """
  if weights is None:
    return jnp.sort(values), None, None
  if presorted:
    return values, weights, jnp.cumsum(weights)
  values, weights = jax.lax.sort((values, weights), num_keys=1, is_stable=True)
  return values, weights, jnp.cumsum(weights)


def _kth(v, cum, k):
  """The k-th smallest (0-based) value of a column from :func:`_column`."""
  return v[k] if cum is None else v[jnp.searchsorted(cum, k, side="right")]


def _count(v, cum, t, side: str):
  """``#(x < t)`` (``side="left"``) or ``#(x <= t)`` (``side="right"``), with multiplicities, of a column from
  :func:`_column`."""
  idx = jnp.searchsorted(v, t, side=side).astype(jnp.int32)
  return idx if cum is None else jnp.where(idx > 0, cum[jnp.maximum(idx - 1, 0)], 0).astype(jnp.int32)


def _geometry(unlearned, u_weights, retrained, r_weights, n, presorted: bool = False):
  """Orientation, the degenerate check and the interval grids of one example.

  The columns are ``[D]`` float64 values with int32 multiplicities summing to ``n``
  (``+inf`` values of multiplicity 0 pad them); each column enters sorted, with its
  cumulative multiplicities, so order statistics and counts are searches.
  """
  u, uw, ucum = _column(unlearned, u_weights, presorted)
  r, rw, rcum = _column(retrained, r_weights, presorted)
  half = lambda v, c: (_kth(v, c, (n - 1) // 2) + _kth(v, c, n // 2)) / 2
  retrained_pos = half(r, rcum) > half(u, ucum)
  pick = lambda a, b: tuple(None if x is None else jnp.where(retrained_pos, x, y) for x, y in zip(a, b))
  pos = pick((r, rw, rcum), (u, uw, ucum))
  neg = pick((u, uw, ucum), (r, rw, rcum))
  pos_lo, pos_hi = _kth(pos[0], pos[2], 0), _kth(pos[0], pos[2], n - 1)
  neg_lo, neg_hi = _kth(neg[0], neg[2], 0), _kth(neg[0], neg[2], n - 1)
  pos_range = pos_hi - pos_lo
  neg_range = neg_hi - neg_lo
  larger = jnp.where(pos_range > neg_range, pos_range, neg_range)
  smaller = jnp.where(pos_range > neg_range, neg_range, pos_range)
  peaky = (smaller / larger) < PEAKY_RATIO  # 0/0 is NaN: not peaky.
  # Interval family: P (smaller range) is the predicted class.
  p_is_neg = pos_range >= neg_range
  sel = lambda a, b: tuple(None if x is None else jnp.where(p_is_neg, x, y) for x, y in zip(a, b))
  p = sel(neg, pos)
  q = sel(pos, neg)
  p_lo, p_hi = sel((neg_lo, neg_hi), (pos_lo, pos_hi))
  width = smaller
  a = (p_lo + width) - BUFFER
  b = p_hi + BUFFER
  num_right = jnp.ceil((b - a) * PER_UNIT).astype(jnp.int32)
  i = jnp.arange(NUM_RIGHT_MAX)
  rights = linspace_at(i, a, b, num_right)
  starts = (rights - width) - BUFFER
  stops = (rights - width) + BUFFER
  return {"pos": pos, "neg": neg, "p": p, "q": q, "peaky": peaky, "retrained_pos": retrained_pos,
          "p_is_neg": p_is_neg, "num_right": num_right, "rights": rights, "starts": starts, "stops": stops,
          "lo": jnp.minimum(pos_lo, neg_lo), "hi": jnp.maximum(pos_hi, neg_hi)}


def _lattice_cells(lo, hi):
  """The monotone cell index ``v -> floor((v - lo) * M / (hi - lo))`` clipped to ``[-1, M + 1]``."""
  m = NUM_CELLS
  inv_h = m / jnp.maximum(hi - lo, jnp.finfo(lo.dtype).tiny)
  return lambda v: jnp.clip(jnp.floor((v - lo) * inv_h), -1, m + 1).astype(jnp.int32)


def _cell_starts(cx):
  """``below[c + 1] = #(cx < c)`` for ``c = -1 .. M + 2`` and the largest occupancy of cells ``0 .. M``."""
  m = NUM_CELLS
  below = jnp.searchsorted(cx, jnp.arange(-1, m + 3), side="left").astype(jnp.int32)
  return below, jnp.max(below[2:m + 2] - below[1:m + 1])


@jax.jit
def _chunk_occupancy(unlearned, retrained):
  """``[C]`` largest lattice-cell occupancy of each example (0 for degenerate ones)."""

  def one(u, r):
    g = _geometry(u, None, r, None, u.shape[0])
    cell = _lattice_cells(g["starts"][0], g["stops"][g["num_right"] - 1])
    occ = jnp.maximum(_cell_starts(cell(g["p"][0]))[1], _cell_starts(cell(g["q"][0]))[1])
    return jnp.where(g["peaky"], 0, occ)

  return jax.vmap(one)(unlearned, retrained)


def _single_grid(k, lo, hi, num_t):
  """Single-threshold grid point ``k``: numpy's float64 ``linspace(lo, hi, T)[k]`` rounded to float32, as float64."""
  return linspace_at(k, lo, hi, num_t).astype(jnp.float32).astype(lo.dtype)


def _single_candidates(pos, neg, lo, hi, num_t, steps: int):
  """``[2N + 1]`` ascending grid indices that contain the first maximum of the single-threshold family.

  The counts below a threshold ``t`` only change when ``t`` passes a pooled data value,
  and the grid is non-decreasing in ``k``; so the first grid point of each gap between
  consecutive pooled values (and index 0) represent every distinct attack, first
  occurrences included. The first grid point above ``v`` is the number of grid points
  ``<= v``: a binary search of ``steps`` halvings over ``[0, T]`` (``T < 2**steps``).
  Indices are clipped to ``T - 1`` (an index past the end repeats the last point).
  """
  num_le = _grid_rank(jnp.concatenate([pos, neg]), lo, hi, num_t, steps)
  idx = jnp.sort(jnp.concatenate([jnp.zeros((1,), jnp.int32), num_le]))
  return jnp.clip(idx, 0, jnp.maximum(num_t - 1, 0))


def _grid_rank(values, lo, hi, num_t, steps: int):
  """The number of single-threshold grid points ``<= v`` for each value: ``steps`` halvings over ``[0, T]``."""

  def halve(_, state):
    below, above = state  # grid(k) <= v for k < below, grid(k) > v for k >= above
    mid = (below + above) // 2
    le = _single_grid(mid, lo, hi, num_t) <= values
    active = below < above
    return jnp.where(active & le, mid + 1, below), jnp.where(active & ~le, mid, above)

  start = jnp.zeros(values.shape, jnp.int32)
  num_le, _ = jax.lax.fori_loop(0, steps, halve, (start, jnp.broadcast_to(num_t, values.shape)))
  return num_le


def _table_lookup(table, k_fp, k_fn):
  """``table[k_fp, k_fn]`` as one gather from the flattened ``[N+1, N+1]`` epsilon table."""
  return table.reshape(-1)[k_fp * table.shape[0] + k_fn]


def _single_family(g, gather_eps, n, search_steps: int):
  """The single-threshold family of an example from :func:`_geometry`: predict positive iff ``c >= t``.

  ``t`` runs over a float32 grid over the pooled range; returns the grid size ``T``, the
  ascending candidate thresholds of :func:`_single_candidates`, their counts ``k_fp``,
  ``k_fn`` and epsilons (``-inf`` where ``T = 0``).
  """
  (pos, _, pos_cum), (neg, _, neg_cum) = g["pos"], g["neg"]
  lo, hi = g["lo"], g["hi"]
  num_t = jnp.ceil((hi - lo) * PER_UNIT).astype(jnp.int32)
  candidates = _single_candidates(pos, neg, lo, hi, num_t, search_steps)
  thresholds = _single_grid(candidates, lo, hi, num_t)
  k_fn = _count(pos, pos_cum, thresholds, "left")
  k_fp = n - _count(neg, neg_cum, thresholds, "left")
  eps_single = jnp.where(num_t > 0, gather_eps(k_fp, k_fn), -jnp.inf)
  return num_t, thresholds, k_fp, k_fn, eps_single


def competition_example(unlearned, u_weights, retrained, r_weights, table, *, search_steps: int,
                        occupancy_pad: int = 4, count_method: str = "lattice"):
  """The competition kernel: epsilon and best attack of one example (jittable, vmappable).

  ``unlearned`` / ``retrained`` are ``[D]`` float64 values and ``u_weights`` /
  ``r_weights`` ``[D]`` int32 multiplicities summing to ``N = table.shape[0] - 1`` (pad
  with ``+inf`` values of multiplicity 0), or both ``None``: every value once (D = N, the
  same counts without the cumulative gathers). The metric passes each model once;
  a model-bootstrap draw passes its distinct models with their multiplicities, so
  duplicated models count as ties, exactly as if the resampled columns were passed.
  Every count is a cumulative multiplicity and every order statistic a search in them.
  ``count_method`` ``"bucket"`` and ``"search"`` need ``None`` weights.
  """
  if count_method != "lattice" and u_weights is not None:
    raise ValueError(f"count_method {count_method!r} counts each value once; weighted columns need 'lattice'")
  n = table.shape[0] - 1
  f64 = unlearned.dtype
  g = _geometry(unlearned, u_weights, retrained, r_weights, n)
  (p, p_w, p_cum), (q, q_w, q_cum) = g["p"], g["q"]
  peaky = g["peaky"]
  retrained_pos, p_is_neg, num_right = g["retrained_pos"], g["p_is_neg"], g["num_right"]
  rights, starts, stops = g["rights"], g["starts"], g["stops"]
  i = jnp.arange(NUM_RIGHT_MAX)
  gather_eps = functools.partial(_table_lookup, table)

  le_p = _count(p, p_cum, rights, "right")
  le_q = _count(q, q_cum, rights, "right")
  occupancy = jnp.int32(0)
  if count_method == "lattice":
    lt_p = _count_below_rows(p, starts, stops, p_w)
    lt_q = _count_below_rows(q, starts, stops, q_w)
  elif count_method == "bucket":
    j = jnp.arange(NUM_LEFT)
    lefts = linspace_at(j[None, :], starts[:, None], stops[:, None], NUM_LEFT)
    lt_p, lt_q, bucket_ok, occupancy = _count_below_bucket(p, q, lefts, starts[0], stops[num_right - 1],
                                                          i < num_right, occupancy_pad)
  elif count_method == "search":
    j = jnp.arange(NUM_LEFT)
    lefts = linspace_at(j[None, :], starts[:, None], stops[:, None], NUM_LEFT)
    lt_p = jnp.searchsorted(p, lefts.reshape(-1), side="left").reshape(lefts.shape).astype(jnp.int32)
    lt_q = jnp.searchsorted(q, lefts.reshape(-1), side="left").reshape(lefts.shape).astype(jnp.int32)
  else:
    raise ValueError(f"count_method must be 'bucket', 'lattice' or 'search', got {count_method!r}")
  in_p = jnp.maximum(le_p[:, None] - lt_p, 0)
  in_q = jnp.maximum(le_q[:, None] - lt_q, 0)
  eps_int = gather_eps(in_q, n - in_p)
  eps_int = jnp.where((i < num_right)[:, None], eps_int, -jnp.inf).reshape(-1)
  best_int = jnp.argmax(eps_int)
  bi, bj = best_int // NUM_LEFT, best_int % NUM_LEFT
  int_fp = in_q[bi, bj]
  int_fn = n - in_p[bi, bj]
  int_left = linspace_at(bj, starts[bi], stops[bi], NUM_LEFT)
  int_right = rights[bi]

  num_t, thresholds, k_fp, k_fn, eps_single = _single_family(g, gather_eps, n, search_steps)
  best_single = jnp.argmax(eps_single)  # candidates ascend: the first maximum of the grid

  int_max = eps_int[best_int]
  single_max = eps_single[best_single]
  use_int = int_max >= single_max  # intervals come first in the organizers' order
  best = jnp.where(use_int, int_max, single_max)
  survived = best > -jnp.inf
  family = jnp.where(peaky | ~survived, FAMILY_NONE, jnp.where(use_int, FAMILY_INTERVAL, FAMILY_SINGLE))
  eps = jnp.where(peaky, EPSILON_CAP, jnp.clip(jnp.where(survived, best, 0.0), 0.0, EPSILON_CAP))
  best_fp = jnp.where(use_int, int_fp, k_fp[best_single])
  best_fn = jnp.where(use_int, int_fn, k_fn[best_single])
  thr = jnp.where(use_int, jnp.stack([int_left, int_right]),
                  jnp.stack([thresholds[best_single], jnp.asarray(jnp.inf, f64)]))
  ok = (num_right <= NUM_RIGHT_MAX) & (num_t < (1 << search_steps))
  if count_method == "bucket":
    ok = ok & bucket_ok
  return {
      "epsilon": eps.astype(jnp.float32),
      "family": family.astype(jnp.int8),
      "k_fp": best_fp,
      "k_fn": best_fn,
      "thresholds": thr,
      "peaky": peaky,
      "retrained_is_positive": retrained_pos,
      "interval_positive_is_retrained": retrained_pos != p_is_neg,
      "ok": ok | peaky,
      "occupancy": jnp.where(peaky, 0, occupancy),
  }


@functools.lru_cache(maxsize=16)
def epsilon_table_monotone(num_models: int) -> bool:
  """Whether :func:`epsilon_table` is non-increasing in ``k_fp`` and in ``k_fn`` wherever both are >= 1.

  :func:`competition_epsilon` bounds a block of interval attacks by the table's value at
  the block's fewest possible errors, which needs this (checked on the table itself).
  """
  t = epsilon_table(num_models)[1:, 1:]
  return bool(np.all(t[1:, :] <= t[:-1, :]) and np.all(t[:, 1:] <= t[:, :-1]))


def _stake(best, buckets: int | None):
  """What a block's bound must exceed to matter, given the best epsilon found so far.

  ``buckets=None``: the best epsilon itself (the search finds the exact maximum). Otherwise
  the search needs only the maximum's score bucket ``k = floor(2 eps)`` (:func:`epsilon_points`;
  ``buckets`` is :func:`num_buckets`): a block matters only if it may reach the next bucket's
  lower edge ``0.5 (k + 1)``, i.e. if its bound exceeds the float just below that edge, and
  nothing matters once ``k >= buckets`` (0 points, as for every larger epsilon). No attack
  found yet (``-inf``) scores as epsilon 0, so it is bucket 0 too. Bounds are table values
  and the edges are exact floats, so the comparison is exact.
  """
  if buckets is None:
    return best
  k = jnp.floor(2 * jnp.maximum(best, 0))
  edge = jnp.nextafter((k + 1) * 0.5, jnp.full_like(best, -jnp.inf))
  return jnp.where(k >= buckets, jnp.inf, edge)


def _best_first(bound, start, open_blocks, per_step: int, buckets: int | None = None):
  """The largest of ``start`` and every block's value, opening blocks by descending bound.

  ``open_blocks(ids, best)`` returns the largest of ``best`` and the values of blocks
  ``ids`` (it may skip what cannot beat ``best``) and how many units it counted. Stops once
  no unopened block's bound beats :func:`_stake` of the best value found or that value
  reaches the epsilon cap. Returns the best value (with ``buckets``, one in the same score
  bucket as the largest) and the units counted.
  """

  per_step = min(per_step, bound.shape[0])

  def open_more(carry):
    left, best, opened = carry
    _, ids = jax.lax.top_k(left, per_step)
    best, counted = open_blocks(ids, best)
    return left.at[ids].set(-jnp.inf), best, opened + counted

  can_beat = lambda carry: (jnp.max(carry[0]) > _stake(carry[1], buckets)) & (carry[1] < EPSILON_CAP)
  _, best, opened = jax.lax.while_loop(can_beat, open_more, (bound, start, jnp.int32(0)))
  return best, opened


def _error_bound(table, least_fp, least_fn):
  """The largest table value with at least these errors: ``+inf`` if both may be 0, else at ``max(., 1)`` each."""
  n = table.shape[0] - 1
  return jnp.where((least_fp == 0) & (least_fn == 0), jnp.inf,
                   _table_lookup(table, jnp.clip(least_fp, 1, n), jnp.clip(least_fn, 1, n)))


def _single_bounds(g, table, search_steps: int, block: int):
  """The single-threshold family of :func:`_single_family` cut into blocks, with each block's bound.

  Each column's sorted values are cut into blocks of ``block``; a block's candidates lie
  between the candidates of its first and last values (grid ranks are monotone), so
  they have at least the ``k_fn`` of the first and the ``k_fp`` of the last.
  """
  n = table.shape[0] - 1
  (pos, _, pos_cum), (neg, _, neg_cum) = g["pos"], g["neg"]
  lo, hi = g["lo"], g["hi"]
  num_t = jnp.ceil((hi - lo) * PER_UNIT).astype(jnp.int32)
  width = -(-pos.shape[0] // block) * block
  padded = lambda v: jnp.concatenate([v, jnp.full((width - v.shape[0],), jnp.inf, v.dtype)])
  values = jnp.concatenate([padded(pos), padded(neg)]).reshape(-1, block)
  state = {"pos": pos, "pos_cum": pos_cum, "neg": neg, "neg_cum": neg_cum, "lo": lo, "hi": hi, "num_t": num_t,
           "values": values}
  ends = _grid_rank(values[:, jnp.array([0, block - 1])], lo, hi, num_t, search_steps)
  t_lo, t_hi = _single_at(state, ends[:, 0]), _single_at(state, ends[:, 1])
  state["bound"] = jnp.where(num_t > 0, _error_bound(table, n - _count(neg, neg_cum, t_hi, "left"),
                                                     _count(pos, pos_cum, t_lo, "left")), -jnp.inf)
  return state


def _single_at(state, idx):
  """The single-threshold grid point of each index, clipped to the grid as the candidates are."""
  lo, hi, num_t = state["lo"], state["hi"], state["num_t"]
  return _single_grid(jnp.clip(idx, 0, jnp.maximum(num_t - 1, 0)), lo, hi, num_t)


def _single_search(state, table, search_steps: int, per_step: int, buckets: int | None = None):
  """The largest epsilon of the single-threshold family from :func:`_single_bounds` (``-inf`` if ``T = 0``)."""
  n = table.shape[0] - 1
  pos, pos_cum, neg, neg_cum = state["pos"], state["pos_cum"], state["neg"], state["neg_cum"]

  def eps_at(idx):
    t = _single_at(state, idx)
    return _table_lookup(table, n - _count(neg, neg_cum, t, "left"), _count(pos, pos_cum, t, "left"))

  lo, hi, num_t, values = state["lo"], state["hi"], state["num_t"], state["values"]
  block_max = lambda ids: jnp.max(eps_at(_grid_rank(values[ids], lo, hi, num_t, search_steps)))
  open_blocks = lambda ids, best: (jnp.maximum(best, block_max(ids)), jnp.int32(ids.shape[0]))
  best, _ = _best_first(state["bound"], eps_at(jnp.int32(0)), open_blocks, per_step, buckets)
  return jnp.where(num_t > 0, best, -jnp.inf)


POOL_CELLS = 4096


def pooled_lattice(values):
  """Cells over an example's pooled ascending values, for :func:`competition_epsilon`'s counts (jittable).

  ``values`` ``[D]`` ascend. The cell of ``v`` is ``floor((v - lo) * M / (hi - lo))``, a
  monotone function of ``v``: a value in a lower cell than ``t`` is below it, one in a
  higher cell is not. Returns ``{"lo", "inv_h", "cell_first"}`` (``cell_first[c + 1]``
  the number of values in cells below ``c``, for ``c = -1 .. M + 1``) and the largest
  number of values sharing a cell (the static ``occupancy`` the counts need).
  """
  m = POOL_CELLS
  lo, hi = values[0], values[-1]
  inv_h = m / jnp.maximum(hi - lo, jnp.finfo(values.dtype).tiny)
  cells = jnp.clip(jnp.floor((values - lo) * inv_h), 0, m).astype(jnp.int32)
  cell_first = jnp.searchsorted(cells, jnp.arange(-1, m + 2), side="left").astype(jnp.int32)
  return {"lo": lo, "inv_h": inv_h, "cell_first": cell_first}, jnp.max(cell_first[2:] - cell_first[1:-1])


def _merged_count(state, t, occupancy: int, side: str):
  """``#(x < t)`` (``side="left"``) or ``#(x <= t)`` in the merged column, packed ``(n + 1) * #P + #Q``.

  A binary search, or with ``occupancy`` the pooled lattice: the values in cells below
  ``t``'s, plus those of its own cell (at most ``occupancy``) compared with ``t``.
  """
  merged, packed_cum = state["merged"], state["packed_cum"]
  if not occupancy:
    return _count(merged, packed_cum, t, side)
  last = merged.shape[0] - 1
  base, end = _cell_span(state["lattice"], t)
  below = (lambda x: x < t) if side == "left" else (lambda x: x <= t)
  idx = base
  for k in range(occupancy):
    idx = idx + ((base + k < end) & below(merged[jnp.minimum(base + k, last)])).astype(jnp.int32)
  return _packed_before(packed_cum, idx)


def _cell_span(lattice, t):
  """Indices ``base .. end - 1`` of the pooled values in ``t``'s lattice cell (lower cells hold those below)."""
  m = POOL_CELLS
  c = jnp.clip(jnp.floor((t - lattice["lo"]) * lattice["inv_h"]), -1, m + 1).astype(jnp.int32)
  return lattice["cell_first"][c + 1], lattice["cell_first"][jnp.minimum(c + 2, m + 2)]


def _packed_before(packed_cum, idx):
  """The packed count of the merged column's first ``idx`` values (0 for none)."""
  return jnp.where(idx > 0, packed_cum[jnp.maximum(idx - 1, 0)], 0)


def _cell_count(state, t, upper: bool):
  """A bound on the merged column's packed count below ``t`` from the pooled lattice's cells alone.

  The values in cells below ``t``'s are below ``t`` and those in cells above it are above
  it, so ``#(x < t)`` and ``#(x <= t)`` both lie between the count of the cells below
  (``upper=False``) and that of the cells up to ``t``'s own (``upper=True``); each part of
  the packed count (P and Q) is bounded alike, being a cumulative count of its own.
  """
  base, end = _cell_span(state["lattice"], t)
  return _packed_before(state["packed_cum"], end if upper else base)


def _interval_bounds(state, table, top, first, rows: int, cols: int, occupancy: int = 0):
  """The bound of each block of interval attacks: right edges ``top .. top + rows - 1`` x left edges ``first ..``.

  ``top`` and ``first`` broadcast against each other (the right-edge counts are taken at
  ``top``'s shape). Each grid ascends, and a left edge rises by about 0.01 from one right
  edge to the next (its rounding moves it by ~1e-10 at most, ``|c| <= 1e6``): a block's
  extreme left edges are those of its first and last valid rows, widened by a margin.
  ``-inf`` for blocks whose first row is past the grid. With ``occupancy`` (the pooled
  lattice is in ``state``) the counts are the looser :func:`_cell_count` bounds, which
  need no comparison; otherwise binary searches.
  """
  n = table.shape[0] - 1
  rights, starts, stops, last = state["rights"], state["starts"], state["stops"], state["last_row"]
  bottom = jnp.clip(top + rows - 1, 0, last)
  l_min = linspace_at(first, starts[top], stops[top], NUM_LEFT)
  l_max = linspace_at(first + cols - 1, starts[bottom], stops[bottom], NUM_LEFT)
  l_min, l_max = l_min - BOUND_MARGIN * (1 + jnp.abs(l_min)), l_max + BOUND_MARGIN * (1 + jnp.abs(l_max))
  r_max, r_min = rights[bottom], rights[top]
  if occupancy:  # the pooled lattice: its cells bound the counts, no comparison needed
    le_max, le_min = _cell_count(state, r_max, True), _cell_count(state, r_min, False)
    lt_min, lt_max = _cell_count(state, l_min, False), _cell_count(state, l_max, True)
  else:
    le_max, le_min = _merged_count(state, r_max, 0, "right"), _merged_count(state, r_min, 0, "right")
    lt_min, lt_max = _merged_count(state, l_min, 0, "left"), _merged_count(state, l_max, 0, "left")
  most_p = jnp.maximum(le_max // (n + 1) - lt_min // (n + 1), 0)
  least_q = jnp.maximum(le_min % (n + 1) - lt_max % (n + 1), 0)
  return jnp.where(top <= last, _error_bound(table, least_q, n - most_p), -jnp.inf)


def _bounded_setup(unlearned, u_weights, retrained, r_weights, table, search_steps: int, block: int,
                   presorted: bool = False, pooled=None, occupancy: int = 0):
  """Everything of :func:`competition_epsilon` before its search: the columns, grids, block bounds and start."""
  if NUM_LEFT % block or block % BOUND_SUB_BLOCK:
    raise ValueError(f"block must divide the {NUM_LEFT} left edges and be a multiple of {BOUND_SUB_BLOCK}, got {block}")
  n = table.shape[0] - 1
  g = _geometry(unlearned, u_weights, retrained, r_weights, n, presorted)
  (p, p_w, _), (q, q_w, _) = g["p"], g["q"]
  single = _single_bounds(g, table, search_steps, SINGLE_BLOCK)
  ok = (g["num_right"] <= NUM_RIGHT_MAX) & (single["num_t"] < (1 << search_steps))

  row_blocks, col_blocks = -(-NUM_RIGHT_MAX // block), NUM_LEFT // block
  rows = row_blocks * block
  pad = lambda x: jnp.concatenate([x, jnp.zeros((rows - NUM_RIGHT_MAX,), x.dtype)])
  state = {"p": g["p"], "q": g["q"], "rights": pad(g["rights"]), "starts": pad(g["starts"]),
           "stops": pad(g["stops"]), "last_row": jnp.maximum(jnp.minimum(g["num_right"], NUM_RIGHT_MAX) - 1, 0)}
  # Both columns merged into one ascending column whose cumulative weight packs both counts,
  # ``(n + 1) * #P + #Q``: one search per edge counts P and Q at once.
  if pooled is None:
    p_w = jnp.ones(p.shape, jnp.int32) if p_w is None else p_w
    q_w = jnp.ones(q.shape, jnp.int32) if q_w is None else q_w
    at_p = jnp.arange(p.shape[0]) + jnp.searchsorted(q, p, side="left")
    at_q = jnp.arange(q.shape[0]) + jnp.searchsorted(p, q, side="right")
    merged = jnp.zeros(p.shape[0] + q.shape[0], p.dtype).at[at_p].set(p).at[at_q].set(q)
    packed = jnp.zeros(merged.shape, jnp.int32).at[at_p].set(p_w * (n + 1)).at[at_q].set(q_w)
    state = dict(state, merged=merged, packed_cum=jnp.cumsum(packed))
  else:
    # The example's values pooled and sorted once (ties in any order: counts of x < t do not see it).
    p_is_unlearned = g["p_is_neg"] == g["retrained_pos"]
    packed = pooled["weights"] * jnp.where(pooled["is_unlearned"] == p_is_unlearned, n + 1, 1)
    state = dict(state, merged=pooled["values"], packed_cum=jnp.cumsum(packed), lattice=pooled["lattice"])
  top = (jnp.arange(row_blocks) * block)[:, None]
  first = (jnp.arange(col_blocks) * block)[None, :]
  bound = _interval_bounds(state, table, top, first, block, block, occupancy).reshape(-1)
  return dict(state, bound=bound, single=single, peaky=g["peaky"], ok=ok | g["peaky"])


def _interval_exact(state, table, top, first, size: int, occupancy: int = 0):
  """The exact largest epsilon of each ``size x size`` block (``top``, ``first`` ``[m]``; ``-inf`` past the grid)."""
  n = table.shape[0] - 1
  rights, starts, stops = state["rights"], state["starts"], state["stops"]
  i = top[:, None] + jnp.arange(size)[None, :]
  j = first[:, None] + jnp.arange(size)[None, :]
  lefts = linspace_at(j[:, None, :], starts[i][:, :, None], stops[i][:, :, None], NUM_LEFT)
  # For l <= r both counts of [l, r] are >= 0, so the packed difference splits; for l > r both are 0.
  inside = (_merged_count(state, rights[i], occupancy, "right")[:, :, None]
            - _merged_count(state, lefts, occupancy, "left"))
  inside = jnp.where(lefts <= rights[i][:, :, None], inside, 0)
  in_p, in_q = inside // (n + 1), inside % (n + 1)
  eps = jnp.where((i <= state["last_row"])[:, :, None], _table_lookup(table, in_q, n - in_p), -jnp.inf)
  return jnp.max(eps, axis=(1, 2))


def _bounded_search(state, table, search_steps: int, block: int, per_step: int, sub_block: int = 0,
                    occupancy: int = 0, buckets: int | None = None):
  """The branch and bound of :func:`competition_epsilon` from :func:`_bounded_setup`'s state."""
  sub_block = sub_block or BOUND_SUB_BLOCK
  col_blocks = NUM_LEFT // block
  k = block // sub_block

  def open_blocks(ids, best):
    # Each block opened is cut into k x k sub-blocks with their own (tighter) bounds; sub-blocks are
    # counted exactly by descending bound while their bound beats the best epsilon found.
    di, dj = (x.reshape(-1) for x in jnp.meshgrid(jnp.arange(k) * sub_block, jnp.arange(k) * sub_block,
                                                   indexing="ij"))
    tops = (((ids // col_blocks) * block)[:, None] + di[None, :]).reshape(-1)
    firsts = (((ids % col_blocks) * block)[:, None] + dj[None, :]).reshape(-1)
    sub = _interval_bounds(state, table, tops, firsts, sub_block, sub_block, occupancy)
    order = jnp.argsort(-sub)
    sub, tops, firsts = sub[order], tops[order], firsts[order]

    def more(c):
      at, best, _ = c
      return ((at < sub.shape[0]) & (sub[jnp.minimum(at, sub.shape[0] - 1)] > _stake(best, buckets))
              & (best < EPSILON_CAP))

    def count(c):
      at, best, counted = c
      value = _interval_exact(state, table, tops[at][None], firsts[at][None], sub_block, occupancy)[0]
      return at + 1, jnp.maximum(best, value), counted + 1

    _, best, counted = jax.lax.while_loop(more, count, (jnp.int32(0), best, jnp.int32(0)))
    return best, counted

  skip = state["peaky"] | ~state["ok"]
  single = dict(state["single"], bound=jnp.where(skip, -jnp.inf, state["single"]["bound"]))
  start = jnp.where(skip, jnp.inf, _single_search(single, table, search_steps, per_step, buckets))
  best, opened = _best_first(state["bound"], start, open_blocks, per_step, buckets)
  eps = jnp.where(state["peaky"], EPSILON_CAP, jnp.clip(jnp.where(best > -jnp.inf, best, 0.0), 0.0, EPSILON_CAP))
  return {"epsilon": eps.astype(jnp.float32), "ok": state["ok"], "opened": opened}


def competition_epsilon(unlearned, u_weights, retrained, r_weights, table, *, search_steps: int,
                        block: int = BOUND_BLOCK, per_step: int = BOUND_BLOCKS_PER_STEP, presorted: bool = False,
                        pooled=None, occupancy: int = 0, buckets: int | None = None):
  """The epsilon of :func:`competition_example` (and its grid check), without its best attack (jittable).

  Same arguments and the same geometry and single-threshold family; the interval family is
  searched by branch and bound instead of counted cell by cell. Its ``R x 400`` attacks
  are cut into ``block x block`` blocks; every attack of a block lies inside the widest
  interval ``[min l, max r]`` of the block and contains the narrowest ``[max l, min r]``,
  so it has at most the P count of the first and at least the Q count of the second, and
  (the table being non-increasing in both error counts, :func:`epsilon_table_monotone`)
  at most the table's value at those counts (``+inf`` where a perfect attack is possible).
  Blocks are opened ``per_step`` highest bounds at a time, until no block left can beat
  the best epsilon found (or it reaches the cap); an opened block is cut into
  :data:`BOUND_SUB_BLOCK`-square sub-blocks bounded the same way, and those whose bound
  beats the best epsilon are counted exactly, highest first (the grid recomputed bit for
  bit, one count per edge in both columns merged, whose cumulative weight packs both
  counts). The single-threshold family is searched the same way first, its
  maximum the interval search's starting point. The maximum, and so the epsilon, is the
  same value bit for bit; the work is a few blocks per example. ``presorted``: each
  column's values already ascend and carry weights (a value left out of a bootstrap draw
  stays in place with weight 0), so nothing is sorted. ``pooled`` (with ``occupancy``, a
  static int): the example's values of both columns pooled and sorted once, ``{"values",
  "is_unlearned", "weights", "lattice"}`` (the lattice from :func:`pooled_lattice`, whose
  cells hold at most ``occupancy`` values each); the merged counts then go through the
  lattice instead of binary searches, and the block bounds take the lattice's cells alone
  (:func:`_cell_count`: looser by at most one cell's values, no comparison). ``buckets``
  (static; :func:`num_buckets` of N): only the epsilon's score bucket is sought, so blocks
  that cannot lift the best epsilon found into a higher bucket are left closed
  (:func:`_stake`); the ``epsilon`` returned is then one attack's, in the same bucket as the
  maximum and with the same points, not always the maximum itself. Also returns ``opened``,
  the number of interval sub-blocks counted exactly.
  """
  state = _bounded_setup(unlearned, u_weights, retrained, r_weights, table, search_steps, block, presorted, pooled,
                         occupancy)
  return _bounded_search(state, table, search_steps, block, per_step, occupancy=occupancy, buckets=buckets)


def competition_epsilons(unlearned, u_weights, retrained, r_weights, table, *, search_steps: int,
                         block: int = BOUND_BLOCK, per_step: int = BOUND_BLOCKS_PER_STEP, presorted: bool = False,
                         pooled=None, occupancy: int = 0, buckets: int | None = None):
  """:func:`competition_epsilon` over a leading axis of examples (jittable).

  The setup is vmapped over the axis; the search runs one example at a time, so each
  example opens its own number of blocks (vmapped, every example would run as many
  steps as the slowest one).
  """
  setup = jax.vmap(lambda u, uw, r, rw, pl: _bounded_setup(u, uw, r, rw, table, search_steps, block, presorted, pl,
                                                           occupancy))
  states = setup(unlearned, u_weights, retrained, r_weights, pooled)
  return jax.lax.map(lambda st: _bounded_search(st, table, search_steps, block, per_step, occupancy=occupancy,
                                                buckets=buckets), states)


@functools.partial(jax.jit, static_argnames=("search_steps", "occupancy_pad", "count_method"))
def _chunk_kernel(unlearned, retrained, table, *, search_steps: int, occupancy_pad: int = 4,
                  count_method: str = "lattice"):
  """vmapped :func:`competition_example` (each model once) over ``[C, N]`` example-major float64 chunks."""
  fn = functools.partial(competition_example, search_steps=search_steps, occupancy_pad=occupancy_pad,
                         count_method=count_method)
  return jax.vmap(lambda u, r, t: fn(u, None, r, None, t), in_axes=(0, 0, None))(unlearned, retrained, table)


# ----------------------------------------------------------------------------------------
# Host driver.


def _as_confs(name: str, value: Any) -> np.ndarray:
  arr = np.asarray(value)
  if arr.ndim != 2:
    raise ValueError(f"{name} must have shape [num_models, num_examples], got shape {arr.shape}")
  if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{name} must be a real array, got dtype {arr.dtype}")
  arr = arr.astype(np.float64)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} must be finite; it has {int(np.sum(~np.isfinite(arr)))} non-finite values")
  if np.max(np.abs(arr), initial=0.0) > MAX_ABS_CONFIDENCE:
    raise ValueError(f"{name} must lie within +-{MAX_ABS_CONFIDENCE:g} (logit-scaled confidences "
                     f"saturate at +-103.62), got max |value| {np.max(np.abs(arr)):g}")
  return arr


def check_pair(unlearned_confs: Any, retrained_confs: Any, same_models: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Both ``[N, E]`` confidence arrays as checked float64 NumPy arrays (N >= 2, E >= 1, finite, bounded).

  ``same_models=False`` lets the two hold different numbers of models, at least 2 each (pools that
  the metric's model sets are chosen from; the caller bounds the sets' N); the examples must agree.
  """
  u = _as_confs("unlearned_confs", unlearned_confs)
  r = _as_confs("retrained_confs", retrained_confs)
  if same_models and u.shape != r.shape:
    raise ValueError(f"unlearned_confs and retrained_confs must have the same shape [N, E], "
                     f"got {u.shape} and {r.shape}")
  if u.shape[1] != r.shape[1]:
    raise ValueError(f"unlearned_confs and retrained_confs must have the same number of examples E, "
                     f"got {u.shape} and {r.shape}")
  for m in sorted({u.shape[0], r.shape[0]}):
    if m < 2:
      raise ValueError(f"need at least 2 models per kind (N >= 2), got N = {m}")
    if m > MAX_NUM_MODELS and same_models:
      raise ValueError(f"N = {m} models per kind is over the bound of {MAX_NUM_MODELS}: the epsilon table "
                       f"takes (N + 1)^2 float32 values")
  if u.shape[1] < 1:
    raise ValueError(f"need at least 1 forget example (E >= 1), got E = {u.shape[1]}")
  return u, r


def _next_pow2(x: int) -> int:
  return 1 << max(0, int(x) - 1).bit_length()


def search_steps(u_chunk: np.ndarray, r_chunk: np.ndarray) -> int:
  """Binary-search steps over the single-threshold grids of a chunk (columns are examples).

  :data:`MIN_SEARCH_STEPS` while the largest ``T = ceil((hi - lo) * 100)`` of the chunk
  is below ``2**MIN_SEARCH_STEPS`` (ranges up to 20.47: every ordinary input), else
  :data:`MAX_SEARCH_STEPS`, enough for any accepted input; two compilations in all.
  Resampled columns (a bootstrap draw) never need more than their originals.
  """
  lo = np.minimum(u_chunk.min(axis=0), r_chunk.min(axis=0))
  hi = np.maximum(u_chunk.max(axis=0), r_chunk.max(axis=0))
  need = int(np.max(np.ceil((hi - lo) * PER_UNIT)))
  return MIN_SEARCH_STEPS if need.bit_length() <= MIN_SEARCH_STEPS else MAX_SEARCH_STEPS


def _run_kernel(u: np.ndarray, r: np.ndarray, chunk_size: int, count_method: str) -> dict[str, np.ndarray]:
  n, e = u.shape
  chunk = min(_next_pow2(chunk_size), _next_pow2(e))
  table = epsilon_table(n)
  parts = []
  with jax.enable_x64(True):
    table_dev = jnp.asarray(table)
    for lo in range(0, e, chunk):
      hi = min(lo + chunk, e)
      uc = np.zeros((chunk, n), np.float64)
      rc = np.zeros((chunk, n), np.float64)
      uc[: hi - lo] = u[:, lo:hi].T
      rc[: hi - lo] = r[:, lo:hi].T
      steps = search_steps(u[:, lo:hi], r[:, lo:hi])
      ua, ra = jnp.asarray(uc), jnp.asarray(rc)
      occ = 1
      if count_method == "bucket":
        # Candidates per query: the chunk's largest cell occupancy (even up to 8, then a power of two).
        need = max(1, int(np.max(np.asarray(_chunk_occupancy(ua, ra))[: hi - lo])))
        occ = need + (need % 2) if need <= 8 else _next_pow2(need)
      out = _chunk_kernel(ua, ra, table_dev, search_steps=steps, occupancy_pad=occ, count_method=count_method)
      if int(np.max(np.asarray(out["occupancy"])[: hi - lo])) > occ:
        raise RuntimeError("internal occupancy bound violated; please report with the inputs")
      parts.append({k: np.asarray(v)[: hi - lo] for k, v in out.items()})
  merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  if not merged["ok"].all():
    raise RuntimeError("internal grid-size bound violated; please report with the inputs")
  return merged


def forgetting_metric(unlearned_confs: Any, retrained_confs: Any, *, chunk_size: int = 4,
                      count_method: str = "lattice") -> MetricResult:
  """The full forgetting-quality computation with per-example details.

  Args:
    unlearned_confs: ``[N, E]`` logit-scaled confidences of the forget examples under N
      unlearned models (numpy or jax, any real dtype; used as float64).
    retrained_confs: ``[N, E]`` the same under N retrained-from-scratch models.
    chunk_size: examples per kernel call (rounded up to a power of two); bounds memory
      (about 10 MB per example at N = 512); small chunks were fastest on a 2-core CPU.
    count_method: ``"lattice"`` (default, arithmetic inverse of the left-edge grids),
      ``"bucket"`` (uniform cell lattice) or ``"search"`` (binary search per left
      edge); all three are exact.

  Returns:
    A :class:`MetricResult`.

  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> res = forgetting_metric(rng.normal(size=(16, 3)), rng.normal(size=(16, 3)) + 50)
  >>> res.epsilons.tolist(), res.forgetting_quality
  ([50.0, 50.0, 50.0], 0.0)
  """
  u, r = check_pair(unlearned_confs, retrained_confs)
  n = u.shape[0]
  out = _run_kernel(u, r, chunk_size, count_method)
  eps = out["epsilon"].astype(np.float64)
  points = epsilon_points(eps, n)
  family = out["family"]
  none = family == FAMILY_NONE
  rate = lambda k: np.where(none, np.nan, (k.astype(np.float32) / np.float32(n))).astype(np.float32)
  thresholds = np.where(none[:, None], np.nan, out["thresholds"])
  return MetricResult(
      forgetting_quality=float(points.sum() / eps.shape[0]),
      epsilons=eps,
      points=points,
      peaky=out["peaky"],
      family=family,
      fpr=rate(out["k_fp"]),
      fnr=rate(out["k_fn"]),
      thresholds=thresholds,
      retrained_is_positive=out["retrained_is_positive"],
      interval_positive_is_retrained=out["interval_positive_is_retrained"],
      num_models=n,
  )


def per_example_epsilons(unlearned_confs: Any, retrained_confs: Any, *, chunk_size: int = 4) -> np.ndarray:
  """``[E]`` float64 epsilon of each forget example from ``[N, E]`` confidences (N >= 2).

  >>> import numpy as np
  >>> per_example_epsilons(np.zeros((4, 1)) + np.arange(4)[:, None], np.arange(4.0)[:, None] + 10).tolist()
  [50.0]
  """
  return forgetting_metric(unlearned_confs, retrained_confs, chunk_size=chunk_size).epsilons


def forgetting_quality(unlearned_confs: Any, retrained_confs: Any, *, chunk_size: int = 4) -> float:
  """The competition's forgetting quality F: mean over examples of ``2**-bucket(eps)``.

  Identical distributions score about 0.18-0.19; separated or collapsed ones score 0.
  """
  return forgetting_metric(unlearned_confs, retrained_confs, chunk_size=chunk_size).forgetting_quality
