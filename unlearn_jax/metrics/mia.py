"""The starting kit's simple membership-inference attack, with a jitted logistic regression.

The NeurIPS 2023 unlearning competition's starting kit measures forgetting with a
loss-based attack: per-example cross-entropy of forget examples (label 1) and test
examples (label 0), class counts equalised by subsampling the larger set, a
scikit-learn ``LogisticRegression()`` (L2, ``C = 1``, intercept not penalised) scored by
accuracy over ``StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)``.
The ideal unlearner leaves the attack at chance, about 0.5.

Here the splits are drawn on the host once with scikit-learn (they depend only on the
labels). The regression minimises the same objective
``0.5 w^2 + C sum_i log(1 + exp(-s_i (w x_i + b)))`` by Newton's method on its two
parameters (the best of a few step sizes, until the relative change is below 1e-12),
jitted and vmapped over splits and models, in float64 (scoped with ``jax.enable_x64``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MAX_NEWTON_STEPS = 50
TOLERANCE = 1e-12  # relative parameter change at which Newton's method stops
STEP_SIZES = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.001)


def _objective(params, x, t, weight, c):
  w, b = params[0], params[1]
  z = w * x + b
  # log(1 + exp(-s z)) with s = 2t - 1: softplus(z) - t z.
  loss = jax.nn.softplus(z) - t * z
  return 0.5 * w * w + c * jnp.sum(weight * loss)


def fit_logistic_regression(x: jax.Array, t: jax.Array, weight: jax.Array | None = None,
                            c: float = 1.0) -> jax.Array:
  """``[2]`` (coef, intercept) minimising sklearn's L2 logistic objective on 1-D features.

  ``x`` ``[n]`` features, ``t`` ``[n]`` labels in {0, 1}, ``weight`` ``[n]`` 0/1 mask
  (padding) or None, ``c`` the inverse regularisation strength. Pure and vmappable.
  """
  x = jnp.asarray(x)
  t = jnp.asarray(t, x.dtype)
  weight = jnp.ones_like(x) if weight is None else jnp.asarray(weight, x.dtype)
  obj = functools.partial(_objective, x=x, t=t, weight=weight, c=c)
  steps = jnp.asarray(STEP_SIZES, x.dtype)

  def newton(state):
    it, params, _ = state
    w, b = params[0], params[1]
    p = jax.nn.sigmoid(w * x + b)
    r = weight * (p - t)
    s = weight * p * (1 - p)
    grad = jnp.stack([w + c * jnp.sum(r * x), c * jnp.sum(r)])
    h = jnp.array([[1.0 + c * jnp.sum(s * x * x), c * jnp.sum(s * x)],
                   [c * jnp.sum(s * x), c * jnp.sum(s) + 1e-12]], x.dtype)
    direction = -jnp.linalg.solve(h, grad)
    candidates = params[None, :] + steps[:, None] * direction[None, :]
    values = jax.vmap(obj)(candidates)
    best = jnp.argmin(values)
    new = jnp.where(values[best] < obj(params), candidates[best], params)
    change = jnp.max(jnp.abs(new - params)) / (1.0 + jnp.max(jnp.abs(new)))
    return it + 1, new, change

  def not_done(state):
    it, _, change = state
    return (it < MAX_NEWTON_STEPS) & (change > TOLERANCE)

  start = (jnp.int32(0), jnp.zeros((2,), x.dtype), jnp.asarray(jnp.inf, x.dtype))
  _, params, _ = jax.lax.while_loop(not_done, newton, start)
  return params


@jax.jit
def _split_accuracies(x, t, train_idx, test_idx):
  """``[M, S]`` test accuracy per model and split; ``x`` ``[M, n]``, ``t`` ``[n]``, indices ``[S, *]``."""

  def one(xm, tr, te):
    params = fit_logistic_regression(xm[tr], t[tr])
    pred = (params[0] * xm[te] + params[1]) > 0
    return jnp.mean((pred == (t[te] > 0.5)).astype(xm.dtype))

  per_split = jax.vmap(one, in_axes=(None, 0, 0))
  return jax.vmap(per_split, in_axes=(0, None, None))(x, train_idx, test_idx)


def mia_splits(labels: np.ndarray, n_splits: int = 10, test_size: float = 0.1,
               random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's ``StratifiedShuffleSplit`` index sets as ``[S, n_train]``, ``[S, n_test]`` arrays."""
  from sklearn.model_selection import StratifiedShuffleSplit
  cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=random_state)
  labels = np.asarray(labels)
  pairs = list(cv.split(np.zeros((labels.shape[0], 1)), labels))
  return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def simple_mia(forget_losses: Any, test_losses: Any, *, n_splits: int = 10, seed: int = 0) -> np.ndarray:
  """Mean cross-validated accuracy of the loss-based attack, per model.

  Args:
    forget_losses: ``[n_forget]`` or ``[M, n_forget]`` per-example cross-entropy on the
      forget set (members, label 1), for M models.
    test_losses: ``[n_test]`` or ``[M, n_test]`` the same on the test set (label 0).
    n_splits: stratified shuffle splits (test size 0.1, ``random_state=0``).
    seed: the larger set is subsampled to the smaller one's size by the permutation
      ``np.random.default_rng(seed)``, the same for every model.

  Returns:
    ``[M]`` (or a scalar array for 1-D inputs) mean attack accuracy; 0.5 is ideal.
  """
  f = np.asarray(forget_losses, np.float64)
  t = np.asarray(test_losses, np.float64)
  squeeze = f.ndim == 1
  f, t = np.atleast_2d(f), np.atleast_2d(t)
  if f.ndim != 2 or t.ndim != 2 or f.shape[0] != t.shape[0]:
    raise ValueError(f"forget_losses and test_losses must be [n] or [M, n] with the same M, "
                     f"got {np.shape(forget_losses)} and {np.shape(test_losses)}")
  if not (np.all(np.isfinite(f)) and np.all(np.isfinite(t))):
    raise ValueError("forget_losses and test_losses must be finite")
  m = min(f.shape[1], t.shape[1])
  if m * 2 < 2 * n_splits or m < 2:
    raise ValueError(f"need at least {max(2, n_splits)} examples per class, got {m}")
  rng = np.random.default_rng(seed)
  if f.shape[1] > m:
    f = f[:, np.sort(rng.permutation(f.shape[1])[:m])]
  if t.shape[1] > m:
    t = t[:, np.sort(rng.permutation(t.shape[1])[:m])]
  x = np.concatenate([t, f], axis=1)
  labels = np.concatenate([np.zeros(m), np.ones(m)])
  train_idx, test_idx = mia_splits(labels, n_splits=n_splits)
  with jax.enable_x64(True):
    acc = _split_accuracies(jnp.asarray(x), jnp.asarray(labels), jnp.asarray(train_idx), jnp.asarray(test_idx))
    out = np.asarray(acc).mean(axis=1)
  return out[0] if squeeze else out
