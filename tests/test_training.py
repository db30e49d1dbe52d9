"""Training engine: PyTorch semantics, epochs, remainder batches (checkpoint rules: test_organizers_run.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import small_digits
from unlearn_jax.models import get_model
from unlearn_jax.training import (Recipe, TrainState, cross_entropy, kl_divergence, learning_rate_fn,
                                  make_train_fn, make_train_step, run_epoch, torch_optimizer)


def test_per_epoch_cosine_matches_torch_cosine_annealing():
  recipe = Recipe(optimizer="sgd", lr=0.1, schedule="cosine_epoch", epochs=5)
  fn = learning_rate_fn(recipe, steps_in_epoch=3)
  got = np.asarray([fn(jnp.asarray(s)) for s in range(15)])
  # torch CosineAnnealingLR(T_max=5) stepped per epoch: constant within an epoch.
  expected = np.repeat([0.1, 0.0905, 0.0655, 0.0345, 0.0095], 3)
  np.testing.assert_allclose(got, expected, atol=5e-5)
  one = learning_rate_fn(Recipe(optimizer="sgd", lr=0.1, schedule="cosine_epoch", epochs=1), 4)
  assert float(one(jnp.asarray(3))) == pytest.approx(0.1)


def _quadratic_grad(theta):
  return 2.0 * (theta - np.array([1.0, -2.0, 0.5], np.float64)) * np.array([1.0, 3.0, 0.5])


def _run_optax(tx, theta0, steps):
  theta = jnp.asarray(theta0, jnp.float32)
  state = tx.init(theta)
  for _ in range(steps):
    g = jnp.asarray(_quadratic_grad(np.asarray(theta, np.float64)), jnp.float32)
    upd, state = tx.update(g, state, theta)
    theta = optax.apply_updates(theta, upd)
  return np.asarray(theta)


def test_sgd_coupled_weight_decay_matches_torch_algorithm():
  lr, mu, wd = 0.1, 0.9, 5e-2
  theta = np.array([0.3, 0.7, -1.0])
  buf = None
  for _ in range(4):  # torch.optim.SGD.step, written out
    g = _quadratic_grad(theta) + wd * theta
    buf = g if buf is None else mu * buf + g
    theta = theta - lr * buf
  got = _run_optax(torch_optimizer("sgd", lr, mu, wd), [0.3, 0.7, -1.0], 4)
  np.testing.assert_allclose(got, theta, rtol=1e-5)


def test_adam_coupled_l2_is_not_adamw():
  lr, wd, b1, b2, eps = 1e-2, 5e-2, 0.9, 0.999, 1e-8
  theta = np.array([0.3, 0.7, -1.0])
  m = v = np.zeros(3)
  for t in range(1, 5):  # torch.optim.Adam.step with weight_decay (L2 added to the gradient)
    g = _quadratic_grad(theta) + wd * theta
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
  got = _run_optax(torch_optimizer("adam", lr, 0.0, wd), [0.3, 0.7, -1.0], 4)
  np.testing.assert_allclose(got, theta, rtol=1e-5)
  adamw = _run_optax(optax.adamw(lr, weight_decay=wd), [0.3, 0.7, -1.0], 4)
  assert np.abs(adamw - theta).max() > 1e-5  # the decoupled variant differs


def test_weighted_cross_entropy_divides_by_weight_sum():
  logits = jax.random.normal(jax.random.key(0), (6, 4))
  labels = jnp.array([0, 1, 1, 3, 0, 2])
  w = jnp.array([0.5, 2.0, 1.0, 4.0])
  lp = np.asarray(jax.nn.log_softmax(logits))
  per = -lp[np.arange(6), np.asarray(labels)]
  wy = np.asarray(w)[np.asarray(labels)]
  assert float(cross_entropy(logits, labels, w)) == pytest.approx((wy * per).sum() / wy.sum(), rel=1e-6)
  assert float(cross_entropy(logits, labels)) == pytest.approx(per.mean(), rel=1e-6)


def test_kl_reductions():
  p, q = jax.random.normal(jax.random.key(1), (2, 5, 3))
  ps, qs = jax.nn.softmax(np.asarray(p) / 2.0), jax.nn.softmax(np.asarray(q) / 2.0)
  total = float((ps * (np.log(ps) - np.log(qs))).sum())
  assert float(kl_divergence(p, q, 2.0, "batchmean")) == pytest.approx(total / 5, rel=1e-5)
  assert float(kl_divergence(p, q, 2.0, "mean")) == pytest.approx(total / 15, rel=1e-5)


class _IndexData:
  """Stands in for SplitData: a 'batch' is the indices themselves."""

  def gather(self, idx):
    return idx, idx


def test_run_epoch_keeps_the_remainder_batch_and_visits_every_example_once():
  seen_sizes = []

  def step(state, batch, key):
    idx, _ = batch
    seen_sizes.append(idx.shape[0])
    return {"count": state["count"].at[idx].add(1), "steps": state["steps"] + 1}, {"loss": jnp.float32(1.0)}

  indices = jnp.arange(10, 20)
  state = {"count": jnp.zeros(20, jnp.int32), "steps": jnp.zeros((), jnp.int32)}
  state, loss = run_epoch(step, state, _IndexData(), indices, 4, jax.random.key(0), jnp.int32(0))
  assert int(state["steps"]) == 3  # ceil(10 / 4): drop_last=False
  np.testing.assert_array_equal(np.asarray(state["count"]), [0] * 10 + [1] * 10)
  assert sorted(seen_sizes) == [2, 4]  # traced once for the scan body (4) and once for the remainder (2)
  assert float(loss) == pytest.approx(1.0)


def test_epoch_order_depends_on_epoch_and_key():
  orders = []

  def step(state, batch, key):
    return jnp.concatenate([state[batch[0].shape[0]:], batch[0]]), {"loss": jnp.float32(0)}

  for key, epoch in [(0, 0), (0, 1), (1, 0), (0, 0)]:
    out, _ = run_epoch(step, jnp.zeros(8, jnp.int32), _IndexData(), jnp.arange(8), 8, jax.random.key(key),
                       jnp.int32(epoch))
    orders.append(tuple(np.asarray(out)))
  assert orders[0] == orders[3]
  assert orders[0] != orders[1] and orders[0] != orders[2]
  assert sorted(orders[0]) == list(range(8))
  for (key, epoch), order in zip([(0, 0), (0, 1), (1, 0)], orders):  # the documented order
    documented = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(jax.random.key(key), epoch), 0), 8)
    assert order == tuple(np.asarray(documented))


def test_training_learns_digits():
  data = small_digits(n_retain=512, n_forget=16, n_val=64)
  model = get_model("mlp", 10)
  recipe = Recipe(optimizer="adam", lr=1e-3, weight_decay=5e-4, epochs=8, batch_size=64, min_save_epoch=4)
  result = jax.jit(make_train_fn(model, recipe, split="retain"))(jax.random.key(0), data)
  assert float(result.val_accuracy.max()) > 0.85
  assert float(result.train_loss[-1]) < float(result.train_loss[0])


def test_train_step_does_not_recompile():
  data = small_digits()
  model = get_model("tiny_cnn", 10, conv_impl="gemm")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  tx = torch_optimizer("sgd", 0.1, 0.9, 5e-4)
  traces = []

  def counted(state, batch, key):
    traces.append(1)
    return make_train_step(model, tx, augment="crop_flip")(state, batch, key)

  step = jax.jit(counted)
  state = TrainState.create(variables["params"], variables["batch_stats"], tx)
  for i in range(3):
    state, metrics = step(state, data.gather(data.retain[:16]), jax.random.key(i))
  assert len(traces) == 1
  assert int(state.step) == 3 and np.isfinite(float(metrics["loss"]))
