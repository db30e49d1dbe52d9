"""The model-level comparisons of two results: a permutation test over the pooled unlearned models, and a paired
t test with groups of models as its units."""

import numpy as np
import pytest
from scipy import stats

from unlearn_jax.metrics import epsilon_points, forgetting_quality, per_example_epsilons
from unlearn_jax.metrics.bootstrap import subset_epsilons, subset_points
from unlearn_jax.metrics import paired
from unlearn_jax.metrics.paired import (default_groups, group_qualities, model_groups_test, model_permutation_test,
                                        split_differences)


def _populations(rng, n, e, delta_b=0.0, tau=0.0):
  mu = rng.normal(size=e)
  unlearned = lambda d: mu + d + rng.normal(0.0, tau, size=(n, 1)) + rng.normal(size=(n, e))
  return unlearned(0.0), unlearned(delta_b), mu + rng.normal(size=(n, e))


def test_group_qualities_equal_the_metric_on_each_group():
  rng = np.random.default_rng(0)
  a, b, r = _populations(rng, 12, 5, delta_b=0.7)
  groups = np.array([[0, 3, 5, 7], [1, 2, 8, 11], [4, 6, 9, 10]])
  got = group_qualities(a, r, b, r, groups)
  want = [[forgetting_quality(x[g], r[g]) for g in groups] for x in (a, b)]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_t_test_over_groups_matches_scipy_and_names_the_better_method():
  rng = np.random.default_rng(1)
  a, b, r = _populations(rng, 16, 24, delta_b=3.0)  # B's models far from the retrained ones: F_B ~ 0
  out = model_groups_test(a, r, b, r, seed=5)
  assert out["groups"] == default_groups(16) == 4 and out["models_per_group"] == 4
  idx = np.sort(np.random.default_rng(5).permutation(16).reshape(4, 4), axis=1)
  d = group_qualities(a, r, b, r, idx)
  d = d[0] - d[1]
  np.testing.assert_allclose(out["differences"], d)
  assert out["p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
  half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
  assert out["interval"] == pytest.approx([d.mean() - half, d.mean() + half])
  assert out["verdict"] == "A is better" and out["interval"][0] > 0
  assert model_groups_test(b, r, a, r, seed=5)["verdict"] == "B is better"


def test_identical_results_are_not_distinguishable():
  rng = np.random.default_rng(2)
  a, _, r = _populations(rng, 8, 6)
  out = model_groups_test(a, r, a, r)
  assert out["verdict"] == "not distinguishable at this N" and out["p_value"] == 1.0
  assert out["interval"] == [0.0, 0.0]


@pytest.mark.slow
@pytest.mark.parametrize("test", ["groups", "permutation"])
def test_model_effect_null_rejects_at_most_10_percent(test):
  # Two populations from one distribution with a shared per-model offset (sd 0.5), one retrained
  # population: the example-level test rejects above its level on such pairs (benchmarks/README.md).
  rng = np.random.default_rng(4 if test == "groups" else 10)
  reps = 200
  rejections = 0
  for _ in range(reps):
    a, b, r = _populations(rng, 16, 10, tau=0.5)
    seed = int(rng.integers(1 << 30))
    out = (model_groups_test(a, r, b, r, seed=seed) if test == "groups"
           else model_permutation_test(a, r, b, r, permutations=19, seed=seed))
    rejections += out["verdict"] != "not distinguishable at this N"
  assert rejections / reps <= 0.10, rejections


# ---------------------------------------------------------------------------
# The permutation test over the pooled unlearned models.


def _naive_split_difference(pooled, ra, rb, split):
  """F(set 1 against ra) - F(set 2 against rb), two explicit metric calls."""
  n = len(split) // 2
  return forgetting_quality(pooled[split[:n]], ra) - forgetting_quality(pooled[split[n:]], rb)


@pytest.mark.parametrize("coarse", [False, True])  # continuous values, and values on a 0.5 lattice (ties)
def test_split_differences_equal_explicit_metric_calls(coarse):
  rng = np.random.default_rng(6)
  a, b, r = _populations(rng, 5, 4, delta_b=0.8)
  rb = r + rng.normal(0.0, 0.3, r.shape)  # a second retrained population: set 2 is scored against it
  if coarse:
    a, b, r, rb = (np.round(2 * x) / 2 for x in (a, b, r, rb))
  pooled = np.concatenate([a, b])
  splits = np.stack([rng.permutation(10) for _ in range(7)])
  got = split_differences(pooled, r, rb, splits) / 4  # sums over the 4 examples
  want = [_naive_split_difference(pooled, r, rb, s) for s in splits]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_subset_epsilons_equal_the_metric_on_the_chosen_sets():
  # sets of N = 6 chosen from pools of 15 unlearned and 9 retrained models, with and without repeats
  rng = np.random.default_rng(12)
  u = np.round(4 * rng.normal(0.3, 1.1, (15, 5))) / 4  # a coarse lattice: ties within and across the pools
  r = np.round(4 * rng.normal(0.0, 1.0, (9, 5))) / 4
  ui = np.stack([rng.permutation(15)[:6] for _ in range(4)] + [rng.integers(0, 15, 6) for _ in range(4)])
  ri = np.stack([rng.permutation(9)[:6] for _ in range(4)] + [rng.integers(0, 9, 6) for _ in range(4)])
  got = subset_epsilons(u, r, ui, ri)
  want = np.stack([per_example_epsilons(u[i], r[j]) for i, j in zip(ui, ri)])
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(subset_points(u, r, ui, ri), epsilon_points(want, 6))
  with pytest.raises(ValueError, match="retrained_idx"):
    subset_epsilons(u, r, ui, ri + 9)  # rows past the retrained pool
  with pytest.raises(ValueError, match="one shape"):
    subset_epsilons(u, r, ui, ri[:, :5])


@pytest.mark.parametrize("block_cells", [paired.BLOCK_CELLS, 36])  # blocks of 3 splits, a partial last one
def test_permutation_p_value_equals_a_naive_loop(monkeypatch, block_cells):
  monkeypatch.setattr(paired, "BLOCK_CELLS", block_cells)
  rng = np.random.default_rng(7)
  a, b, r = _populations(rng, 6, 3, delta_b=0.4, tau=0.3)
  rb = r + rng.normal(0.0, 0.2, r.shape)
  out = model_permutation_test(a, r, b, rb, permutations=29, level=0.9, seed=11)
  # the same random splits, drawn one at a time; the first is the observed assignment
  draws = np.random.default_rng(11)
  splits = [draws.permutation(12) for _ in range(30)]
  pooled = np.concatenate([a, b])
  observed = forgetting_quality(a, r) - forgetting_quality(b, rb)
  permuted = [_naive_split_difference(pooled, r, rb, s) for s in splits[1:]]
  extreme = sum(abs(d) >= abs(observed) - 1e-12 for d in permuted)
  assert out["mean_difference"] == pytest.approx(observed, abs=1e-15)
  np.testing.assert_allclose(out["permuted_differences"], permuted, rtol=0, atol=1e-15)
  assert out["p_value"] == (1 + extreme) / 30
  assert out["verdict"] == ("not distinguishable at this N" if out["p_value"] > 0.1 else
                            "A is better" if observed > 0 else "B is better")


def test_permutation_test_detects_a_planted_difference():
  rng = np.random.default_rng(8)
  a, b, r = _populations(rng, 16, 20, delta_b=3.0)  # B's models far from the retrained ones: F_B ~ 0
  out = model_permutation_test(a, r, b, r, permutations=39, seed=2)
  assert out["mean_difference"] == pytest.approx(forgetting_quality(a, r) - forgetting_quality(b, r))
  assert out["mean_difference"] > 0.1 and max(map(abs, out["permuted_differences"])) < out["mean_difference"]
  assert out["p_value"] == 1 / 40 and out["verdict"] == "A is better"
  assert model_permutation_test(b, r, a, r, permutations=39, seed=2)["verdict"] == "B is better"


def test_permutation_test_of_a_result_with_itself():
  rng = np.random.default_rng(9)
  a, _, r = _populations(rng, 8, 6)
  out = model_permutation_test(a, r, a, r, permutations=19)
  assert out["mean_difference"] == 0.0 and out["p_value"] == 1.0
  assert out["verdict"] == "not distinguishable at this N"


@pytest.mark.parametrize("test, kwargs, match", [
    (model_groups_test, {"groups": 1}, "groups"), (model_groups_test, {"groups": 5}, "groups"),
    (model_groups_test, {"level": 1.0}, "level"),
    (model_permutation_test, {"permutations": 0}, "integer >= 1"),
    (model_permutation_test, {"permutations": 2.5}, "integer >= 1"),
    (model_permutation_test, {"permutations": 18}, r"cannot give p <= 0.05 .* at least 19"),
    (model_permutation_test, {"level": 0.0}, "level"),
])
def test_bad_arguments(test, kwargs, match):
  rng = np.random.default_rng(3)
  a, b, r = _populations(rng, 8, 2)
  with pytest.raises(ValueError, match=match):
    test(a, r, b, r, **kwargs)
  with pytest.raises(ValueError, match="one shape"):
    test(a, r, b[:6], r[:6])


