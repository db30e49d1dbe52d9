"""``salun`` (``docs/algorithms.md`` §6.9): what makes the method that method."""

from __future__ import annotations

import jax
import numpy as np

from tests.methods.support import ce
from unlearn_jax.training import steps
from unlearn_jax.unlearning import get_method, salun


def test_salun_mask_is_global_top_rho_and_masked_weights_stay_exactly_at_theta0(data, cnn):
  model, original = cnn
  rho = 0.3
  method = get_method("salun", model, rho=rho, lr=0.05, epochs=1, batch_size=16, mask_batch_size=16)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(1)).state
  # Independent mask: |∇ mean CE over all 16 forget examples| at θ₀ in eval mode, global top fraction.
  x, y = data.gather(data.forget)
  g = jax.grad(lambda p: ce(steps.apply_eval(model, p, original.batch_stats, x), y))(original.params)
  flat = np.concatenate([np.abs(np.asarray(v)).ravel() for v in jax.tree.leaves(g)])
  k = int(flat.size * rho)
  threshold = np.sort(flat)[::-1][k - 1]
  mask = jax.jit(lambda o: salun.saliency_mask(salun.forget_gradient(model, o, data, 16), rho))(original)
  m_flat = np.concatenate([np.asarray(v).ravel() for v in jax.tree.leaves(mask)])
  assert m_flat.sum() == k
  np.testing.assert_array_equal(m_flat == 1, flat >= threshold)
  moved = np.concatenate([(np.asarray(a) != np.asarray(b)).ravel()
                          for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(original.params))])
  assert not np.any(moved[m_flat == 0]), "a masked weight moved"
  assert moved[m_flat == 1].mean() > 0.9
