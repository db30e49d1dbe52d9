"""``finetune`` (``docs/algorithms.md`` §6.1): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.methods.support import ce
from unlearn_jax.training import steps
from unlearn_jax.unlearning import get_method


def test_finetune_scrub_repo_preset_uses_eval_mode_bn_and_l2_to_init(data, cnn):
  model, original = cnn
  hp = get_method("finetune", model, preset="scrub-repo").hyperparameters
  assert (hp["lr"], hp["momentum"], hp["weight_decay"], hp["l2_init"], hp["bn_train"], hp["epochs"]) == (
      0.01, 0.0, 0.0, 0.1, False, 10)
  # A large λ and rate so that the L2-to-init pull is visible in the second step.
  method = get_method("finetune", model, preset="scrub-repo", epochs=2, batch_size=64, lr=0.5, l2_init=5.0)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(0)).state
  x, y = data.gather(data.retain)  # one full batch per epoch: order-free

  def loss(params):
    l2 = sum(jnp.sum((p - q) ** 2) for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(original.params)))
    return ce(steps.apply_eval(model, params, original.batch_stats, x), y) + 5.0 / 2 * l2

  params = original.params
  for _ in range(2):
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params, jax.grad(loss)(params))
  for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  for a, b in zip(jax.tree.leaves(out.batch_stats), jax.tree.leaves(original.batch_stats)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
