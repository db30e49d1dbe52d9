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
  for b in range(DRAWS):
    np.testing.assert_array_equal(fast[b], forgetting_metric(u[ui[b]], r[ri[b]]).epsilons, err_msg=f"draw {b}")
  np.testing.assert_array_equal(fast[0], forgetting_metric(u, r).epsilons)


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
  for b in range(4):
    np.testing.assert_array_equal(fast[b], forgetting_metric(u[ui[b]], r[ri[b]]).epsilons, err_msg=f"draw {b}")


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
    full = jax.jit(jax.vmap(lambda *a: privacy.competition_example(*a, table, search_steps=11)))(*args)
  np.testing.assert_array_equal(np.asarray(bounded["epsilon"]), np.asarray(full["epsilon"]))
  np.testing.assert_array_equal(np.asarray(bounded["epsilon"]).astype(np.float64), forgetting_metric(u, r).epsilons)
  assert np.all(np.asarray(bounded["ok"]))
  # "opened" counts sub-blocks counted exactly, BOUND_SUB_BLOCK ** 2 attacks each.
  assert np.mean(np.asarray(bounded["opened"])) * privacy.BOUND_SUB_BLOCK ** 2 < attacks / 40


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
