"""``bad_teacher`` (``docs/algorithms.md`` §6.7): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.training import steps
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import bad_teacher, get_method


def test_bad_teacher_target_mixes_teachers_by_flag_with_mean_reduction():
  bad = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  good = jnp.array([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
  q = bad_teacher.mixed_target(bad, good, jnp.array([True, False]), 1.0)
  np.testing.assert_allclose(np.asarray(q[0]), np.asarray(jax.nn.softmax(bad[0])), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(q[1]), np.asarray(jax.nn.softmax(good[1])), rtol=1e-6)
  student = jnp.array([[0.5, 0.1, -0.2], [0.0, 0.3, 0.9]])
  logp = np.log(np.asarray(jax.nn.softmax(student)))
  qn = np.asarray(q)
  expected_sum = float(np.sum(qn * (np.log(qn) - logp)))
  assert float(bad_teacher.kl_to_target(q, student, 1.0, "mean")) == pytest.approx(expected_sum / 6, rel=1e-5)
  assert float(bad_teacher.kl_to_target(q, student, 1.0, "batchmean")) == pytest.approx(expected_sum / 2, rel=1e-5)


def test_bad_teacher_loss_uses_a_per_seed_random_teacher_on_forget_and_the_original_on_retain(data, cnn):
  model, original = cnn
  # lr 0 and one batch holding the whole union: the epoch loss is the KL at θ₀ in train mode.
  method = get_method("bad_teacher", model, lr=1e-30, batch_size=256, epochs=1)
  key = jax.random.key(9)
  got = float(jax.jit(method.unlearn)(original, data, key).metrics["loss"][0])
  bad_p, bad_s = init_variables(model, jax.random.fold_in(key, bad_teacher.TEACHER_STREAM), data.image_shape)
  n_r = data.retain.shape[0]
  sub = data.retain[jax.random.permutation(jax.random.fold_in(key, bad_teacher.SUBSET_STREAM), n_r)[:19]]
  x_f, _ = data.gather(data.forget)
  x_r, _ = data.gather(sub)
  x = jnp.concatenate([x_f, x_r])
  target = jnp.concatenate([jax.nn.softmax(steps.apply_eval(model, bad_p, bad_s, x_f)),
                            jax.nn.softmax(steps.apply_eval(model, original.params, original.batch_stats, x_r))])
  student, _ = steps.apply_train(model, original.params, original.batch_stats, x)
  expected = jnp.sum(target * (jnp.log(target) - jax.nn.log_softmax(student))) / target.size
  assert got == pytest.approx(float(expected), rel=1e-4)
  other = float(jax.jit(method.unlearn)(original, data, jax.random.key(10)).metrics["loss"][0])
  assert other != pytest.approx(got, rel=1e-3)
