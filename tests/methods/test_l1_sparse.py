"""``l1_sparse`` (``docs/algorithms.md`` §6.8): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.unlearning import get_method, l1_sparse


def test_l1_sparse_penalty_follows_the_linear_decay_schedule(data, mlp):
  model, original = mlp
  kw = dict(lr=1e-30, epochs=4, no_l1_epochs=1, batch_size=16)
  with_l1 = jax.jit(get_method("l1_sparse", model, gamma=1e-3, **kw).unlearn)(original, data, jax.random.key(0))
  no_l1 = jax.jit(get_method("l1_sparse", model, gamma=0.0, **kw).unlearn)(original, data, jax.random.key(0))
  norm = float(sum(jnp.abs(p).sum() for p in jax.tree.leaves(original.params)))
  # γ_t = γ(1 − t/(E − E₀)) for t < E − E₀ = 3, then 0.
  expected = [1e-3 * f * norm for f in (1.0, 2 / 3, 1 / 3, 0.0)]
  diff = np.asarray(with_l1.metrics["loss"]) - np.asarray(no_l1.metrics["loss"])
  np.testing.assert_allclose(diff, expected, rtol=1e-3, atol=1e-5)
  assert l1_sparse.gamma_schedule(1.0, 3, 3) == [1.0, 1.0, 1.0]
