"""``neggrad_plus`` (``docs/algorithms.md`` §6.3): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.methods.support import ce
from unlearn_jax.unlearning import ModelState, get_method


def test_neggrad_plus_step_is_beta_retain_minus_forget_with_l2_to_init_and_bn_threading(data, cnn):
  model, original = cnn
  beta, lam, lr = 0.9, 0.5, 0.1
  # One retain batch (all 64) and one forget batch (all 16) per step: both are order-free.
  method = get_method("neggrad_plus", model, beta=beta, l2_init=lam, lr=lr, momentum=0.0, weight_decay=0.0,
                      bn_train=True, epochs=2, batch_size=64, forget_batch_size=16)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(0)).state
  xr, yr = data.gather(data.retain)
  xf, yf = data.gather(data.forget)

  def loss(params, stats):
    lr_, s1 = model.apply({"params": params, "batch_stats": stats}, xr, train=True, mutable=["batch_stats"])
    lf_, s2 = model.apply({"params": params, "batch_stats": s1["batch_stats"]}, xf, train=True,
                          mutable=["batch_stats"])
    l2 = sum(jnp.sum((p - q) ** 2) for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(original.params)))
    return beta * (ce(lr_, yr) + lam / 2 * l2) - (1 - beta) * ce(lf_, yf), s2["batch_stats"]

  params, stats = original.params, original.batch_stats
  for _ in range(2):
    grads, stats = jax.grad(loss, has_aux=True)(params, stats)
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
  for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ModelState(params, stats))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
