"""``fisher`` (``docs/algorithms.md`` §6.10): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.methods.support import ce
from unlearn_jax.training import steps
from unlearn_jax.unlearning import fisher, get_method, toolkit


def _naive_fisher(model, state, data, indices):
  """(1/N) Σ_x Σ_y p(y|x) (∂CE(x, y)/∂θ)², one example and one label at a time."""
  total = jax.tree.map(jnp.zeros_like, state.params)
  grad_fn = jax.jit(jax.grad(lambda p, x, y: ce(steps.apply_eval(model, p, state.batch_stats, x), y)))
  for i in np.asarray(indices):
    x, _ = data.gather(jnp.asarray([i]))
    p = jax.nn.softmax(steps.apply_eval(model, state.params, state.batch_stats, x))[0]
    for y in range(data.num_classes):
      g = grad_fn(state.params, x, jnp.asarray([y]))
      total = jax.tree.map(lambda t, gi: t + p[y] * gi ** 2, total, g)
  return jax.tree.map(lambda t: t / len(indices), total)


def test_fisher_matches_per_example_computation_and_noise_scales_with_inverse_fisher(data, mlp):
  model, original = mlp
  idx = data.retain[np.arange(10) * 64 // 10]  # the evenly spaced subsample the method uses
  naive = _naive_fisher(model, original, data, idx)
  fast = jax.jit(lambda o: fisher.fisher_diagonal(model, o, data, idx, fisher_batch=1, chunk=4))(original)
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(naive)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-9)

  # Variance from the naive Fisher, written out: α·min(1/(F+1e-8), cap), mean over the torch
  # input axis (Dense axis 0), ×10 for the classifier (10 outputs) and every 1-D tensor.
  alpha = 1e-4
  expected = {}
  for name, f in zip(toolkit.leaf_names(naive), jax.tree.leaves(naive)):
    f = np.asarray(f, np.float64)
    head = f.shape[-1] == 10
    v = alpha * np.minimum(1 / (f + 1e-8), 1e2 if head else 1e3)
    if v.ndim == 2:
      v = np.broadcast_to(v.mean(0, keepdims=True), v.shape)
    expected[name] = v * (10 if head or v.ndim == 1 else 1)

  method = get_method("fisher", model, alpha=alpha, subsample=10, chunk=4)
  run = jax.jit(jax.vmap(method.unlearn, in_axes=(None, None, 0)))
  outs = run(original, data, jax.random.split(jax.random.key(0), 16))
  z = []
  for name, new, old in zip(toolkit.leaf_names(original.params), jax.tree.leaves(outs.state.params),
                            jax.tree.leaves(original.params)):
    z.append(((np.asarray(new, np.float64) - np.asarray(old)) / np.sqrt(expected[name])).ravel())
  z = np.concatenate(z)
  assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.03


def test_fisher_batched_option_weights_batch_mean_gradients_by_mean_probability(data, mlp):
  model, original = mlp
  idx = np.asarray(data.retain[:10])
  batches = [idx[0:4], idx[4:8], idx[8:10]]  # fisher_batch 4: the last batch is short
  grad_fn = jax.jit(jax.grad(lambda p, x, y: ce(steps.apply_eval(model, p, original.batch_stats, x), y)))
  total = jax.tree.map(jnp.zeros_like, original.params)
  for b in batches:
    x, _ = data.gather(jnp.asarray(b))
    p_mean = jax.nn.softmax(steps.apply_eval(model, original.params, original.batch_stats, x)).mean(0)
    for y in range(10):
      g = grad_fn(original.params, x, jnp.full((len(b),), y, jnp.int32))
      total = jax.tree.map(lambda t, gi: t + p_mean[y] * gi ** 2, total, g)
  expected = jax.tree.map(lambda t: t / len(batches), total)
  got = jax.jit(lambda o: fisher.fisher_diagonal(model, o, data, jnp.asarray(idx), fisher_batch=4, chunk=2))(
      original)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-9)
