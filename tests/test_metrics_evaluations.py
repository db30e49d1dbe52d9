"""Many-model evaluations: bootstrap of F, U-LiRA and KLOM against plain NumPy transcriptions of the spec."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import reference_points
from tests.helpers import mixed_case
from unlearn_jax.metrics import (example_bootstrap, forgetting_metric, forgetting_quality, interval, klom, klom_summary,
                                 model_bootstrap, ulira)
from unlearn_jax.metrics import bootstrap

# One shape for the model-bootstrap runs that share a compilation.
N_BS, E_BS, B_BS = 16, 12, 24


# ----------------------------------------------------------------------------------------
# Bootstrap.


@pytest.fixture(scope="module")
def tied_populations():
  # Shifted, rounded (ties), saturated and narrow columns, three of each kind.
  rng = np.random.default_rng(0)
  cases = [mixed_case(rng, N_BS) for _ in range(E_BS // 4)]
  u, r = np.concatenate([c[0] for c in cases], 1), np.concatenate([c[1] for c in cases], 1)
  return u, r, model_bootstrap(u, r, num_draws=B_BS, seed=3)


def test_model_bootstrap_draws_equal_plain_metric_on_resampled_arrays(tied_populations):
  u, r, boot = tied_populations
  assert boot.forgetting_quality.shape == (B_BS,)
  assert boot.unlearned_idx.shape == boot.retrained_idx.shape == (B_BS, N_BS)
  assert np.issubdtype(boot.unlearned_idx.dtype, np.integer)
  assert not np.array_equal(boot.unlearned_idx, boot.retrained_idx)  # independent draws
  eps = bootstrap._draw_all(u, r, boot.unlearned_idx, boot.retrained_idx)
  for b in (0, 11, B_BS - 1):
    ui, ri = boot.unlearned_idx[b], boot.retrained_idx[b]
    assert len(np.unique(ui)) < N_BS  # the draw really duplicates models
    plain = forgetting_metric(u[ui], r[ri])
    assert boot.forgetting_quality[b] == plain.forgetting_quality, b
    np.testing.assert_array_equal(eps[b], plain.epsilons)
  assert len(np.unique(boot.forgetting_quality)) > 5


def test_model_bootstrap_indices_follow_the_documented_seed(tied_populations):
  _, _, boot = tied_populations
  rng = np.random.default_rng(3)
  np.testing.assert_array_equal(boot.unlearned_idx, rng.integers(0, N_BS, size=(B_BS, N_BS)))
  np.testing.assert_array_equal(boot.retrained_idx, rng.integers(0, N_BS, size=(B_BS, N_BS)))


def test_model_bootstrap_identical_populations_cover_the_ceiling():
  rng = np.random.default_rng(1)
  u = rng.normal(size=(N_BS, E_BS))
  boot = model_bootstrap(u, u, num_draws=B_BS, seed=1)  # plain F(u, u) is 1: nothing separates
  assert forgetting_quality(u, u) == 1.0
  # The ceiling: two independent samples of the same distribution (about 0.18 at any N).
  ceiling = forgetting_quality(rng.normal(size=(N_BS, 48)), rng.normal(size=(N_BS, 48)))
  assert 0.14 < ceiling < 0.23
  lo, hi = interval(boot.forgetting_quality)
  assert lo <= ceiling <= hi, (lo, ceiling, hi)


def test_model_bootstrap_constant_population_gives_zero_width():
  rng = np.random.default_rng(2)
  r = rng.normal(size=(N_BS, E_BS))
  u = np.ones((N_BS, E_BS)) * rng.normal(size=E_BS)  # every unlearned model identical: peaky, F = 0
  boot = model_bootstrap(u, r, num_draws=B_BS)
  np.testing.assert_array_equal(boot.forgetting_quality, 0.0)
  assert interval(boot.forgetting_quality) == (0.0, 0.0)
  shift = np.where(np.arange(E_BS) % 2 == 0, 0.0, 3.0)
  both = model_bootstrap(u, u + shift, num_draws=B_BS)  # both constant: every draw is the input itself
  np.testing.assert_array_equal(both.forgetting_quality, forgetting_quality(u, u + shift))
  assert interval(both.forgetting_quality)[0] == interval(both.forgetting_quality)[1]


def test_example_bootstrap_resamples_points():
  eps = np.array([0.0, 0.7, 1.2, 6.0, 50.0, 3.3])
  got = example_bootstrap(eps, 512, num_draws=50, seed=4)
  idx = np.random.default_rng(4).integers(0, 6, size=(50, 6))
  want = [reference_points(eps[row], 512).mean() for row in idx]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
  assert interval(example_bootstrap(np.full(7, 0.3), 512, num_draws=20)) == (1.0, 1.0)


def test_interval_is_the_central_percentiles():
  values = np.random.default_rng(5).normal(size=1000)
  assert interval(values) == (np.percentile(values, 2.5), np.percentile(values, 97.5))
  assert interval(values, level=0.5) == (np.percentile(values, 25), np.percentile(values, 75))


@pytest.mark.parametrize("call,match", [
    (lambda: model_bootstrap(np.zeros((4, 2)), np.zeros((4, 3))), "same shape"),
    (lambda: model_bootstrap(np.zeros((4, 2)), np.zeros((4, 2)), num_draws=0), "num_draws"),
    (lambda: example_bootstrap(np.zeros((2, 2)), 16), "shape"),
    (lambda: interval([1.0, 2.0], level=1.0), "level"),
    (lambda: interval([]), "at least one"),
])
def test_bootstrap_bad_inputs(call, match):
  with pytest.raises(ValueError, match=match) as err:
    call()
  assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------
# U-LiRA: a per-example transcription of docs/evaluations.md section 4.


def _gauss_logpdf(c, mu, sd):
  return -np.log(sd) - 0.5 * np.log(2 * np.pi) - 0.5 * ((c - mu) / sd) ** 2


def _roc_stats(pos, neg):
  """AUC by all pairs; TPR at FPR <= level by sweeping every threshold."""
  auc = (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) / (len(pos) * len(neg))
  tprs = {}
  for name, level in (("1pct", 0.01), ("0p1pct", 0.001)):
    best = 0.0
    for t in np.concatenate([np.unique(np.concatenate([pos, neg])), [np.inf]]):
      if np.mean(neg >= t) <= level:
        best = max(best, np.mean(pos >= t))
    tprs[name] = best
  return auc, tprs


def _ulira_numpy(u, r, folds, fixed_variance, seed):
  n, e = u.shape
  fold_of = np.empty(n, int)
  for k, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
    fold_of[part] = k
  s_u, s_r = np.zeros((n, e)), np.zeros((n, e))
  for k in range(folds):
    out = fold_of != k
    var_u = np.array([np.var(u[out, x]) for x in range(e)])
    var_r = np.array([np.var(r[out, x]) for x in range(e)])
    if fixed_variance:
      var_u, var_r = np.full(e, var_u.mean()), np.full(e, var_r.mean())
    for x in range(e):
      mu_u, mu_r = np.mean(u[out, x]), np.mean(r[out, x])
      sd_u, sd_r = max(np.sqrt(var_u[x]), 1e-4), max(np.sqrt(var_r[x]), 1e-4)
      for i in np.flatnonzero(~out):
        s_u[i, x] = _gauss_logpdf(u[i, x], mu_u, sd_u) - _gauss_logpdf(u[i, x], mu_r, sd_r)
        s_r[i, x] = _gauss_logpdf(r[i, x], mu_u, sd_u) - _gauss_logpdf(r[i, x], mu_r, sd_r)
  res = {"pair_balanced_accuracy": np.mean([(np.mean(s_u[:, x] > 0) + np.mean(s_r[:, x] <= 0)) / 2 for x in range(e)])}
  m_u, m_r = s_u.sum(1), s_r.sum(1)
  res["model_balanced_accuracy"] = (np.mean(m_u > 0) + np.mean(m_r <= 0)) / 2
  for prefix, pos, neg in (("pair", s_u.ravel(), s_r.ravel()), ("model", m_u, m_r)):
    auc, tprs = _roc_stats(pos, neg)
    res[f"{prefix}_auc"] = auc
    for name, v in tprs.items():
      res[f"{prefix}_tpr_at_{name}_fpr"] = v
    for name, level in (("1pct", 0.01), ("0p1pct", 0.001)):  # the FPR each threshold may have
      res[f"{prefix}_max_fpr_at_{name}_fpr"] = np.floor(level * neg.size + 1e-9) / neg.size
  return res


@pytest.mark.parametrize("folds,fixed_variance", [(2, False), (3, True)])
def test_ulira_equals_numpy_transcription(folds, fixed_variance):
  rng = np.random.default_rng(10 + folds)
  n, e = 12, 30
  u = rng.normal(size=(n, e)) * rng.uniform(0.5, 2, size=e) + rng.uniform(-1, 1, size=e)
  r = rng.normal(size=(n, e))
  u[:, 3] = 0.25  # a population with zero variance: the floored sigma keeps scores finite
  r[:, 4] = np.round(r[:, 4])  # ties
  got = ulira(u, r, folds=folds, fixed_variance=fixed_variance, seed=7)
  want = _ulira_numpy(u, r, folds, fixed_variance, seed=7)
  assert set(got) == set(want)
  for key in want:
    assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key


def test_ulira_same_distribution_is_a_coin_flip_and_separated_is_perfect():
  rng = np.random.default_rng(12)
  u, r = rng.normal(size=(64, 200)), rng.normal(size=(64, 200))
  same = ulira(u, r)
  assert abs(same["pair_balanced_accuracy"] - 0.5) < 0.03
  assert abs(same["pair_auc"] - 0.5) < 0.03
  apart = ulira(u + 6.0, r)
  assert apart["pair_balanced_accuracy"] > 0.99 and apart["pair_auc"] > 0.99
  assert apart["model_balanced_accuracy"] == 1.0 and apart["model_tpr_at_0p1pct_fpr"] == 1.0
  assert apart["model_max_fpr_at_1pct_fpr"] == 0.0  # N < 100 negatives: a TPR at 0% FPR, and labelled so


@pytest.mark.parametrize("kwargs,shape_r,match", [
    ({"folds": 2}, (3, 5), "N >= 4"),
    ({"folds": 1}, (8, 5), "folds must be"),
    ({}, (8, 4), "same shape"),
])
def test_ulira_bad_inputs(kwargs, shape_r, match):
  with pytest.raises(ValueError, match=match) as err:
    ulira(np.zeros((shape_r[0], 5)), np.zeros(shape_r), **kwargs)
  assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------
# KLOM: a per-example transcription of docs/evaluations.md section 5.


def _klom_numpy(u, r):
  out = []
  for x in range(u.shape[1]):
    a, b = np.clip(u[:, x], -100, 100), np.clip(r[:, x], -100, 100)
    edges = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 21)
    p = np.histogram(a, bins=edges)[0] / len(a)
    q = np.histogram(b, bins=edges)[0] / len(b)
    out.append(sum(p[i] * np.log(p[i] / max(q[i], 1e-5)) for i in range(20) if p[i] > 0))
  return np.array(out)


def test_klom_equals_numpy_transcription():
  rng = np.random.default_rng(20)
  n, e = 32, 40
  u = rng.normal(size=(n, e)) * rng.uniform(0.2, 3, size=e) + rng.uniform(-2, 2, size=e)
  r = rng.normal(size=(n, e))
  u[:, 0] = 7.0  # every unlearned value equal
  u[:, 1], r[:, 1] = 3.0, 3.0  # every value equal: zero-width range
  u[:5, 2], r[:3, 2] = 250.0, -1e4  # clipped to +-100
  r[:, 3] = np.round(r[:, 3])  # ties on bin edges
  got = klom(u, r)
  want = _klom_numpy(u, r)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  assert got[1] == 0.0 and got[0] > 1.0


def test_klom_is_zero_on_identical_samples_and_summarised():
  x = np.random.default_rng(21).normal(size=(16, 10))
  np.testing.assert_array_equal(klom(x, x[::-1]), 0.0)  # same sample, other model order
  values = np.arange(101.0)
  assert klom_summary(values) == {"mean": 50.0, "p95": 95.0}


def test_klom_bad_inputs():
  with pytest.raises(ValueError, match="same shape"):
    klom(np.zeros((4, 2)), np.zeros((5, 2)))
  with pytest.raises(ValueError, match="finite"):
    klom(np.full((4, 2), np.nan), np.zeros((4, 2)))


def test_model_bootstrap_blocks_report_progress_and_change_nothing(tied_populations, monkeypatch):
  u, r, boot = tied_populations
  calls = []
  monkeypatch.setattr(bootstrap, "PAIR_BLOCK", 64)  # 288 pairs -> 5 blocks, the last one padded
  again = model_bootstrap(u, r, num_draws=B_BS, seed=3, progress=lambda done, total: calls.append((done, total)))
  np.testing.assert_array_equal(again.forgetting_quality, boot.forgetting_quality)
  assert calls == [(64, 288), (128, 288), (192, 288), (256, 288), (288, 288)]


def test_metric_and_bootstrap_share_one_kernel():
  import inspect
  from unlearn_jax.metrics import privacy
  source = inspect.getsource(bootstrap)
  assert "privacy._" not in source and "competition_example" in source
  assert "competition_example" in inspect.getsource(privacy._chunk_kernel)
