"""The model-level comparison of two results: groups of models are the units of the paired t test."""

import numpy as np
import pytest
from scipy import stats

from unlearn_jax.metrics import forgetting_quality
from unlearn_jax.metrics.paired import default_groups, group_qualities, model_groups_test


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


@pytest.mark.parametrize("kwargs, match", [({"groups": 1}, "groups"), ({"groups": 5}, "groups"),
                                           ({"level": 1.0}, "level")])
def test_bad_arguments(kwargs, match):
  rng = np.random.default_rng(3)
  a, b, r = _populations(rng, 8, 2)
  with pytest.raises(ValueError, match=match):
    model_groups_test(a, r, b, r, **kwargs)


@pytest.mark.slow
def test_model_effect_null_rejects_at_most_10_percent():
  # Two populations from one distribution with a shared per-model offset (sd 0.5): the
  # example-level test rejected 35-41% of such pairs at a nominal 5%.
  rng = np.random.default_rng(4)
  reps = 200
  rejections = 0
  for _ in range(reps):
    a, b, r = _populations(rng, 16, 10, tau=0.5)
    rejections += model_groups_test(a, r, b, r, seed=int(rng.integers(1 << 30)))["verdict"] != \
        "not distinguishable at this N"
  assert rejections / reps <= 0.10, rejections
