"""``neggrad`` (``docs/algorithms.md`` §6.2): what makes the method that method."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.methods.support import eval_ce
from unlearn_jax.unlearning import SetSizes, get_method


def test_neggrad_raises_forget_loss_and_uses_only_the_forget_set(data, mlp):
  model, original = mlp
  method = get_method("neggrad", model, lr=0.05, epochs=2, batch_size=8)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(0)).state
  assert eval_ce(model, out, data, data.forget) > eval_ce(model, original, data, data.forget) + 0.05
  # With the retain set swapped for another one the run is unchanged: only D_f is read.
  other = data.replace(retain=data.validation)
  again = jax.jit(method.unlearn)(original, other, jax.random.key(0)).state
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert method.cost(SetSizes(1000, 25, 100)) == pytest.approx(2 * 25 / 1000)
