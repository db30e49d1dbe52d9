"""``fanchuan`` (``docs/algorithms.md`` §6.11): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.methods.support import run
from unlearn_jax.training import steps
from unlearn_jax.unlearning import SetSizes, fanchuan


def test_fanchuan_contrastive_loss_matches_naive_formula():
  rng = np.random.default_rng(0)
  z_f, z_r = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
  s = z_f @ z_r.T / 1.15
  naive = np.mean([np.log(np.exp(s[i]).sum()) - s[i].mean() for i in range(3)])
  assert float(fanchuan.contrastive_loss(jnp.asarray(z_f), jnp.asarray(z_r), 1.15)) == pytest.approx(naive, rel=1e-5)
  u = np.full(4, 0.25)
  p = np.exp(z_f) / np.exp(z_f).sum(1, keepdims=True)
  assert float(fanchuan.uniform_kl(jnp.asarray(z_f))) == pytest.approx(np.mean((u * np.log(u / p)).sum(1)), rel=1e-5)


def test_fanchuan_stage1_moves_forget_outputs_toward_uniform(tiny, trained, data):
  x, _ = data.gather(data.forget)

  def kl_to_uniform(state):
    logits, _ = steps.apply_train(tiny, state.params, state.batch_stats, x)
    return float(fanchuan.uniform_kl(logits))

  result = run(fanchuan.make(tiny, epochs=0), trained, data)
  assert kl_to_uniform(result.state) < kl_to_uniform(trained) - 1e-3
  assert result.metrics["stage1_loss"].shape == (1,) and result.metrics["loss"].shape == (0,)


def test_fanchuan_forget_round_detaches_retain_logits_and_threads_batch_norm(tiny, trained, data):
  x_f, _ = data.gather(data.forget[:8])
  x_r, _ = data.gather(data.retain[:16])
  loss_fn = fanchuan.forget_round_loss(tiny, 1.15)
  (loss, (stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      trained.params, trained.batch_stats, (x_f, x_r), None)
  z_r, _ = steps.apply_train(tiny, trained.params, trained.batch_stats, x_r)  # a constant below

  def naive(params):
    z_f, _ = steps.apply_train(tiny, params, trained.batch_stats, x_f)
    s = np.float32(1 / 1.15) * z_f @ z_r.T
    return jnp.mean(jax.scipy.special.logsumexp(s, axis=1) - s.mean(axis=1))

  assert float(loss) == pytest.approx(float(naive(trained.params)), rel=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(jax.grad(naive)(trained.params))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # Both train-mode passes update the running statistics, forget batch first.
  _, after_f = steps.apply_train(tiny, trained.params, trained.batch_stats, x_f)
  _, after_r = steps.apply_train(tiny, trained.params, after_f, x_r)
  for got, want in zip(jax.tree.leaves(stats), jax.tree.leaves(after_r)):
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_fanchuan_stage2_runs_forget_and_retain_rounds(tiny, trained, data):
  method = fanchuan.make(tiny, epochs=2, retain_batch_size=32)
  result = run(method, trained, data)
  assert result.metrics["forget_loss"].shape == (2,) and result.metrics["loss"].shape == (2,)
  assert np.all(np.isfinite(result.metrics["forget_loss"]))
  # 2 R-ep + 3 forget passes + 2 epochs × 1 pair × 32/64 detached forwards at ⅓.
  assert method.cost(SetSizes(64, 16, 16)) == pytest.approx(2 + 3 * 16 / 64 + 2 * 32 / 64 / 3)
