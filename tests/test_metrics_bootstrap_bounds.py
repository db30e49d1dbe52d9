"""The model bootstrap's bounded search against the plain metric on explicitly resampled arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import METRIC_KERNELS, mixed_case
from unlearn_jax.metrics import bootstrap, forgetting_metric, privacy

pytestmark = METRIC_KERNELS  # one worker under -n: shared kernel compilations (tests/helpers.py)

DRAWS = 6


def _varied(rng, n):
  """Eight examples: the mixed cases, coarse integer values, one value repeated, a shifted twin and a wide column."""
  u, r = mixed_case(rng, n)
  coarse_u, coarse_r = rng.integers(0, 3, size=(n, 1)), rng.integers(0, 4, size=(n, 1))
  repeated = np.where(rng.random(size=(n, 1)) < 0.5, 0.25, rng.normal(size=(n, 1)))
  twin = rng.normal(size=(n, 1))
  wide_u, wide_r = rng.normal(0.3, 1.1, size=(n, 1)) * 4, rng.normal(size=(n, 1)) * 4
  u = np.concatenate([u, coarse_u, repeated, twin, wide_u], 1)
  r = np.concatenate([r, coarse_r, repeated[::-1], twin + 0.5, wide_r], 1)
  return u.astype(np.float64), r.astype(np.float64)


# N = 3 in the default run; N = 64 (same checks, larger populations) and N = 2, 4 are slow.
@pytest.mark.parametrize("n", [3] + [pytest.param(n, marks=pytest.mark.slow) for n in (64, 2, 4)])
def test_bounded_draws_equal_the_plain_metric_on_resampled_arrays(n):
  rng = np.random.default_rng(n)
  u, r = _varied(rng, n)
  ui, ri = rng.integers(0, n, size=(DRAWS, n)), rng.integers(0, n, size=(DRAWS, n))
  ui[0], ri[0] = np.arange(n), np.arange(n)  # the identity draw: the metric itself
  ui[1], ri[1] = 0, n - 1  # one model repeated N times in each population
  fast = bootstrap._draw_all(u, r, ui, ri, method="bounded")
  scored = bootstrap._draw_all(u, r, ui, ri, method="bounded", score_only=True)
  for b in range(DRAWS):
    plain = forgetting_metric(u[ui[b]], r[ri[b]]).epsilons
    np.testing.assert_array_equal(fast[b], plain, err_msg=f"draw {b}")
    _assert_same_points(scored[b], plain, n, f"draw {b}")
  np.testing.assert_array_equal(fast[0], forgetting_metric(u, r).epsilons)


def _assert_same_points(scored, exact, n, msg=""):
  """A score-only epsilon is one attack's (so at most the maximum) with the maximum's points."""
  np.testing.assert_array_equal(privacy.epsilon_points(scored, n), privacy.epsilon_points(exact, n), err_msg=msg)
  assert np.all(scored <= exact), msg


def test_score_only_draws_keep_every_examples_points_across_buckets():
  # N = 96, 48 examples whose unlearned shift runs from 0 to 3 sd: epsilons across every score bucket,
  # through the pooled lattice; the search that stops at the bucket gives the metric's points.
  rng = np.random.default_rng(21)
  n, e = 96, 48
  shift = np.linspace(0.0, 3.0, e)
  u, r = rng.normal(shift, 1.0 + shift / 6, size=(n, e)), rng.normal(size=(n, e))
  ui, ri = rng.integers(0, n, size=(3, n)), rng.integers(0, n, size=(3, n))
  scored = bootstrap._draw_all(u, r, ui, ri, score_only=True)
  exact = bootstrap._draw_all(u, r, ui, ri)
  plain = np.stack([forgetting_metric(u[i], r[j]).epsilons for i, j in zip(ui, ri)])
  np.testing.assert_array_equal(exact, plain)
  _assert_same_points(scored, plain, n)
  buckets = np.floor(2 * plain)
  assert len(np.unique(buckets[buckets < privacy.num_buckets(n)])) >= 6  # the examples span the buckets
  assert np.any(scored < plain)  # the search did stop short of the maximum somewhere


def test_stake_is_the_next_bucket_edge():
  # A bound must reach the next score bucket's lower edge to matter; nothing matters past the last bucket.
  # (No attack found, -inf, is epsilon 0: bucket 0.)
  best = jnp.asarray([-np.inf, 0.0, 0.49, 1.0, 1.2, 6.9, 7.0, np.inf], jnp.float32)
  stake = np.asarray(privacy._stake(best, 14))
  edges = np.float32([0.5, 0.5, 0.5, 1.5, 1.5, 7.0, np.inf, np.inf])  # nothing found yet scores as 0
  below = np.nextafter(edges, np.float32(-np.inf))
  np.testing.assert_array_equal(stake, np.where(np.isfinite(edges), below, edges))
  for edge, s_ in zip(edges[:6], stake[:6]):
    assert edge > s_ and np.nextafter(edge, np.float32(-np.inf)) <= s_  # the edge itself beats it, nothing lower
  np.testing.assert_array_equal(np.asarray(privacy._stake(best, None)), np.asarray(best))


def test_lattice_counts_equal_binary_searches():
  # The pooled lattice's counts against jnp.searchsorted on tied, coarse and spread values, at and around them.
  rng = np.random.default_rng(11)
  values = np.sort(np.concatenate([rng.normal(size=300), rng.integers(-3, 4, size=40) * 0.5, np.full(5, 0.125)]))
  weights = rng.integers(0, 4, size=values.shape[0]).astype(np.int32)
  next_up, next_down = values + 1e-12 * (1 + np.abs(values)), values - 1e-12 * (1 + np.abs(values))
  queries = np.concatenate([values, next_up, next_down,
                            rng.uniform(-8, 8, size=500), [-1e6, 1e6]])
  with jax.enable_x64(True):
    lattice, occupancy = jax.jit(privacy.pooled_lattice)(jnp.asarray(values))
    state = {"merged": jnp.asarray(values), "packed_cum": jnp.cumsum(jnp.asarray(weights)), "lattice": lattice}
    occupancy = int(occupancy)
    assert occupancy >= 5  # the repeated value shares one cell
    for side in ("left", "right"):
      fast = jax.jit(lambda t: privacy._merged_count(state, t, occupancy, side))(jnp.asarray(queries))
      below = np.searchsorted(values, queries, side=side)
      expected = np.where(below > 0, np.cumsum(weights)[np.maximum(below - 1, 0)], 0)
      np.testing.assert_array_equal(np.asarray(fast), expected, err_msg=side)
    # the block bounds' counts from the cells alone bracket both exact counts, in each packed part
    lower, upper = (np.asarray(jax.jit(lambda t: privacy._cell_count(state, t, up))(jnp.asarray(queries)))
                    for up in (False, True))
    cum = np.concatenate([[0], np.cumsum(weights)])
    left, right = cum[np.searchsorted(values, queries, "left")], cum[np.searchsorted(values, queries, "right")]
    assert np.all(lower <= left) and np.all(right <= upper)
    assert np.mean(upper - lower) < 0.5 * np.mean(weights) * 10  # a cell holds a few values, not many


def test_bounded_draws_with_the_lattice_equal_the_plain_metric():
  # Untied normal values: the draws count through the pooled lattice (few values per cell), not binary searches.
  rng = np.random.default_rng(5)
  n = 48
  u, r = rng.normal(0.3, 1.1, size=(n, 3)), rng.normal(size=(n, 3))
  with jax.enable_x64(True):
    both = np.sort(np.concatenate([u.T, r.T], axis=1), axis=1)
    occupancy = int(np.max(np.asarray(bootstrap._pooled_lattices(jnp.asarray(both))[1])))
  assert 1 <= occupancy <= bootstrap.MAX_OCCUPANCY
  ui, ri = rng.integers(0, n, size=(4, n)), rng.integers(0, n, size=(4, n))
  fast = bootstrap._draw_all(u, r, ui, ri, method="bounded")
  scored = bootstrap._draw_all(u, r, ui, ri, method="bounded", score_only=True)
  for b in range(4):
    plain = forgetting_metric(u[ui[b]], r[ri[b]]).epsilons
    np.testing.assert_array_equal(fast[b], plain, err_msg=f"draw {b}")
    _assert_same_points(scored[b], plain, n, f"draw {b}")


@pytest.mark.slow
def test_bounded_and_full_bootstraps_agree_at_the_competition_size():
  # N = 512 normal populations as in the benchmark: the bounds prune most blocks, the values do not move.
  rng = np.random.default_rng(7)
  u, r = rng.normal(0.3, 1.1, size=(512, 3)), rng.normal(size=(512, 3))
  fast = bootstrap.model_bootstrap(u, r, num_draws=4, seed=2)
  full = bootstrap.model_bootstrap(u, r, num_draws=4, seed=2, method="full")
  np.testing.assert_array_equal(fast.forgetting_quality, full.forgetting_quality)
  eps = bootstrap._draw_all(u, r, fast.unlearned_idx, fast.retrained_idx)
  for b in range(4):
    plain = forgetting_metric(u[fast.unlearned_idx[b]], r[fast.retrained_idx[b]])
    np.testing.assert_array_equal(eps[b], plain.epsilons)


def test_bounds_open_few_blocks_and_never_miss_the_maximum():
  # Per example: the bounded epsilon equals the full kernel's, after opening a fraction of the blocks.
  rng = np.random.default_rng(3)
  n = 128
  u, r = rng.normal(0.3, 1.1, size=(n, 6)), rng.normal(size=(n, 6))
  attacks = privacy.NUM_RIGHT_MAX * privacy.NUM_LEFT
  ones = np.ones((6, n), np.int32)
  with jax.enable_x64(True):
    table = jnp.asarray(privacy.epsilon_table(n))
    args = (jnp.asarray(u.T), jnp.asarray(ones), jnp.asarray(r.T), jnp.asarray(ones))
    bounded = jax.jit(lambda *a: privacy.competition_epsilons(*a, table, search_steps=11))(*args)
    scored = jax.jit(lambda *a: privacy.competition_epsilons(*a, table, search_steps=11,
                                                             buckets=privacy.num_buckets(n)))(*args)
    full = jax.jit(jax.vmap(lambda *a: privacy.competition_example(*a, table, search_steps=11)))(*args)
  np.testing.assert_array_equal(np.asarray(bounded["epsilon"]), np.asarray(full["epsilon"]))
  np.testing.assert_array_equal(np.asarray(bounded["epsilon"]).astype(np.float64), forgetting_metric(u, r).epsilons)
  assert np.all(np.asarray(bounded["ok"]))
  # "opened" counts sub-blocks counted exactly, BOUND_SUB_BLOCK ** 2 attacks each.
  assert np.mean(np.asarray(bounded["opened"])) * privacy.BOUND_SUB_BLOCK ** 2 < attacks / 40
  # seeking only the score bucket opens no more, and keeps the points
  _assert_same_points(np.asarray(scored["epsilon"]).astype(np.float64), forgetting_metric(u, r).epsilons, n)
  assert np.all(np.asarray(scored["opened"]) <= np.asarray(bounded["opened"]))


@pytest.mark.parametrize("n", [2, 5, 16, 100])
def test_epsilon_table_monotone_matches_a_cell_by_cell_check(n):
  t = privacy.epsilon_table(n)
  pairs = [(t[a, b], t[a + 1, b]) for a in range(1, n) for b in range(1, n + 1)]
  pairs += [(t[a, b], t[a, b + 1]) for a in range(1, n + 1) for b in range(1, n)]
  assert privacy.epsilon_table_monotone(n) == all(later <= earlier for earlier, later in pairs)
  assert privacy.epsilon_table_monotone(512)


def test_bootstrap_method_is_checked():
  with pytest.raises(ValueError, match="method"):
    bootstrap.model_bootstrap(np.zeros((4, 2)), np.ones((4, 2)), num_draws=2, method="fast")
