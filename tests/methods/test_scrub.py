"""``scrub`` (``docs/algorithms.md`` §6.4): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.training import steps
from unlearn_jax.unlearning import get_method, scrub, toolkit


def test_scrub_max_step_ascends_the_forget_kl_to_the_eval_mode_teacher(data, cnn):
  model, original = cnn
  # γ = α = 0 with plain SGD: the min epoch cannot move the weights, so the result is θ₀ after
  # one max step on the whole of D_f (one batch of 16), which must match a hand-written step.
  lr, T = 0.5, 4.0
  method = get_method("scrub", model, epochs=1, msteps=1, gamma=0.0, alpha=0.0, lr=lr, momentum=0.0,
                      weight_decay=0.0, temperature=T, batch_size=64, forget_batch_size=16)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(5))
  x, _ = data.gather(data.forget)
  teacher = steps.apply_eval(model, original.params, original.batch_stats, x)

  def forget_kl(params):
    student, _ = steps.apply_train(model, params, original.batch_stats, x)
    pt = jax.nn.softmax(teacher / T)
    return T * T * jnp.sum(pt * (jax.nn.log_softmax(teacher / T) - jax.nn.log_softmax(student / T))) / x.shape[0]

  grads = jax.grad(lambda p: -forget_kl(p))(original.params)
  expected = jax.tree.map(lambda p, g: p - lr * g, original.params, grads)
  for a, b in zip(jax.tree.leaves(out.state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  assert float(forget_kl(out.state.params)) > 1.1 * float(forget_kl(original.params)) > 0
  np.testing.assert_allclose(float(out.metrics["max_loss"][0]), -float(forget_kl(original.params)), rtol=1e-4)


def test_scrub_lr_schedule_follows_epochs_across_max_and_min_steps():
  hp = scrub.resolve("MIA", {})
  assert scrub.epoch_lrs(hp) == pytest.approx([5e-4, 5e-4, 5e-4, 5e-5, 5e-5])
  starts = scrub.epoch_starts(hp, n_retain=64, n_forget=20)  # 2 retain + 2 forget steps per max epoch
  assert starts == [0, 4, 8, 12, 14]
  lr = toolkit.epoch_table_lr(scrub.epoch_lrs(hp), starts)
  got = [float(lr(jnp.asarray(c))) for c in (0, 11, 12, 13, 14, 30)]
  assert got == pytest.approx([5e-4, 5e-4, 5e-5, 5e-5, 5e-5, 5e-5])


def test_scrub_rewind_returns_the_snapshot_closest_to_the_forget_validation_error(data, mlp):
  model, original = mlp
  kw = dict(msteps=1, lr=0.2, batch_size=16, forget_batch_size=8)
  rewound = jax.jit(get_method("scrub", model, rewind=True, epochs=3, **kw).unlearn)(
      original, data, jax.random.key(2))
  errors = np.asarray(rewound.metrics["forget_error"])
  final = jax.jit(get_method("scrub", model, epochs=3, **kw).unlearn)(original, data, jax.random.key(2)).state
  # Target: the final student's error on validation examples of classes present in D_f.
  present = set(np.asarray(data.labels[data.forget]).tolist())
  x, y = data.gather(data.validation)
  pred = np.asarray(steps.apply_eval(model, final.params, final.batch_stats, x).argmax(-1))
  keep = np.array([c in present for c in np.asarray(y)])
  target = float(np.mean(pred[keep] != np.asarray(y)[keep]))
  assert float(rewound.metrics["target_error"]) == pytest.approx(target)
  chosen = int(np.argmin(np.abs(errors - target)))
  assert int(rewound.metrics["rewind_epoch"]) == chosen
  # The returned model is the end-of-epoch snapshot: a run of chosen+1 epochs gives it.
  short = jax.jit(get_method("scrub", model, epochs=chosen + 1, **kw).unlearn)(original, data, jax.random.key(2))
  for a, b in zip(jax.tree.leaves(rewound.state), jax.tree.leaves(short.state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_scrub_shares_one_optimizer_state_between_max_and_min_steps_by_default(data, mlp):
  model, original = mlp
  kw = dict(epochs=2, msteps=2, lr=0.05, batch_size=32, forget_batch_size=16, weight_decay=0.0)
  key = jax.random.key(6)
  run = lambda **extra: jax.jit(get_method("scrub", model, **kw, **extra).unlearn)(original, data, key).state
  # Without momentum the optimiser carries nothing across steps: sharing it or not is the same run.
  same_a, same_b = run(momentum=0.0), run(momentum=0.0, separate_optimizers=True)
  for a, b in zip(jax.tree.leaves(same_a), jax.tree.leaves(same_b)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # With momentum the shared buffer carries min-step velocity into the max steps and back.
  shared, separate = run(momentum=0.9), run(momentum=0.9, separate_optimizers=True)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(separate))) > 1e-4
