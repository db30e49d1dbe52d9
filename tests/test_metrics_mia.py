"""Simple MIA: the jitted logistic regression against scikit-learn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

from unlearn_jax.metrics import fit_logistic_regression, simple_mia


@pytest.mark.parametrize("shift", [0.0, 0.4, 1.5])
def test_fit_matches_sklearn(shift):
  rng = np.random.default_rng(int(shift * 10))
  x = np.concatenate([rng.exponential(size=150), rng.exponential(size=150) + shift])
  t = np.r_[np.zeros(150), np.ones(150)]
  model = LogisticRegression().fit(x[:, None], t)
  with jax.enable_x64(True):
    params = np.asarray(jax.jit(fit_logistic_regression)(jnp.asarray(x), jnp.asarray(t)))
  np.testing.assert_allclose(params, [model.coef_[0, 0], model.intercept_[0]], rtol=5e-3, atol=5e-4)


def _sklearn_mia(forget, test, seed=0):
  m = min(len(forget), len(test))
  rng = np.random.default_rng(seed)
  if len(forget) > m:
    forget = forget[np.sort(rng.permutation(len(forget))[:m])]
  if len(test) > m:
    test = test[np.sort(rng.permutation(len(test))[:m])]
  x = np.concatenate([test, forget])[:, None]
  y = np.r_[np.zeros(m), np.ones(m)]
  cv = StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)
  return cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").mean()


def test_simple_mia_equals_sklearn_cross_validation_per_model():
  rng = np.random.default_rng(3)
  forget = rng.exponential(size=(3, 120)) * np.array([[1.0], [0.5], [0.2]])
  test = rng.exponential(size=(3, 90))
  got = simple_mia(forget, test)
  assert got.shape == (3,)
  want = [_sklearn_mia(forget[i], test[i]) for i in range(3)]
  np.testing.assert_allclose(got, want, atol=1e-12)
  assert got[2] > got[0]  # smaller forget losses are easier to tell apart
  assert float(simple_mia(forget[0], test[0])) == pytest.approx(want[0], abs=1e-12)


def test_same_distribution_is_near_chance():
  rng = np.random.default_rng(4)
  acc = simple_mia(rng.exponential(size=(2, 400)), rng.exponential(size=(2, 400)))
  assert np.all(np.abs(acc - 0.5) < 0.1)


def test_simple_mia_validates():
  with pytest.raises(ValueError, match="same M"):
    simple_mia(np.ones((2, 30)), np.ones((3, 30)))
  with pytest.raises(ValueError, match="finite"):
    simple_mia(np.full(30, np.nan), np.ones(30))
