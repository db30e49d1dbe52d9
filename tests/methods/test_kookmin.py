"""``kookmin`` (``docs/algorithms.md`` §6.12): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import small_digits
from tests.methods.support import flat, run
from unlearn_jax.training import steps
from unlearn_jax.unlearning import kookmin


def _ce_grad(model, params, stats, data, idx):
  def loss(p):
    logits, _ = steps.apply_train(model, p, stats, data.gather(idx)[0])
    y = data.labels[idx]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])
  return jax.grad(loss)(params)


def test_kookmin_lr_factors_are_the_reference_table():
  np.testing.assert_allclose(kookmin.lr_factors(5), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
  assert kookmin.lr_factors(1) == [1.0]


def test_kookmin_redraws_the_30_percent_smallest_gradient_entries_and_damps_kept_ones(tiny, trained):
  # |D_r| = |D_f| = 16 and one batch each: the random subset is all of D_r, so G has a closed form.
  data = small_digits(n_retain=16, n_forget=16)
  base = dict(epochs=1, batch_size=64, weight_decay=0.0)
  frozen = run(kookmin.make(tiny, lr=0.0, **base), trained, data)
  g_r = _ce_grad(tiny, trained.params, trained.batch_stats, data, data.retain)
  g_f = _ce_grad(tiny, trained.params, trained.batch_stats, data, data.forget)
  G = np.abs(np.asarray(g_r["conv1"]["kernel"] - g_f["conv1"]["kernel"])).reshape(-1)
  orig = flat(trained.params)["conv1/kernel"].reshape(-1)
  redrawn = flat(frozen.state.params)["conv1/kernel"].reshape(-1)
  changed = redrawn != orig
  n = int(round(0.3 * orig.size))
  assert changed.sum() == n
  assert set(np.flatnonzero(changed)) == set(np.argsort(G, kind="stable")[:n])
  np.testing.assert_allclose(frozen.metrics["reinit_fraction"], [n / orig.size])
  for name in ("head/kernel", "head/bias", "bn1/scale"):
    np.testing.assert_array_equal(flat(frozen.state.params)[name], flat(trained.params)[name])
  # One full-batch SGD step (wd 0, factor 1): Δ = -lr·g on re-drawn entries and -0.1·lr·g on kept ones.
  lr = 0.05
  stepped = run(kookmin.make(tiny, lr=lr, **base), trained, data)
  g = _ce_grad(tiny, frozen.state.params, frozen.state.batch_stats, data, data.retain)
  delta = flat(stepped.state.params)["conv1/kernel"].reshape(-1) - redrawn
  expected = -lr * np.asarray(g["conv1"]["kernel"]).reshape(-1) * np.where(changed, 1.0, 0.1)
  np.testing.assert_allclose(delta, expected, rtol=2e-3, atol=1e-8)
  kept_move = np.abs(delta[~changed]).mean() / np.abs(np.asarray(g["conv1"]["kernel"]).reshape(-1)[~changed]).mean()
  assert kept_move == pytest.approx(0.1 * lr, rel=1e-3)
  np.testing.assert_allclose(flat(stepped.state.params)["head/bias"] - flat(trained.params)["head/bias"],
                             -lr * np.asarray(g["head"]["bias"]), rtol=2e-3, atol=1e-8)


def test_kookmin_global_scope_ranks_across_kernels():
  grads = {"a": {"kernel": jnp.arange(1.0, 9.0).reshape(1, 2, 2, 2)},
           "b": {"kernel": jnp.arange(9.0, 17.0).reshape(1, 2, 2, 2)}, "c": {"bias": jnp.zeros(3)}}
  per_layer = kookmin.reinit_masks(grads, 0.25, "layer")
  joint = kookmin.reinit_masks(grads, 0.25, "global")
  assert int(per_layer["a"]["kernel"].sum()) == 2 and int(per_layer["b"]["kernel"].sum()) == 2
  assert int(joint["a"]["kernel"].sum()) == 4 and int(joint["b"]["kernel"].sum()) == 0
  assert not joint["c"]["bias"].any()


def test_kookmin_keys_draw_different_subsets_and_masks(tiny, trained, data):
  method = kookmin.make(tiny, epochs=1, lr=0.0)
  a, b = (flat(run(method, trained, data, seed).state.params) for seed in (1, 2))
  orig = flat(trained.params)["conv1/kernel"]
  assert not np.array_equal(a["conv1/kernel"] != orig, b["conv1/kernel"] != orig)
