"""``scrub_noise`` (``docs/algorithms.md`` §6.5): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.training import steps
from unlearn_jax.unlearning import get_method, scrub_noise, toolkit


def test_scrub_noise_gates_pick_k_non_bn_tensors_per_key(cnn):
  _, original = cnn
  names = toolkit.leaf_names(original.params)
  picks = []
  for seed in range(6):
    gates = jax.tree.leaves(scrub_noise.noise_gates(original.params, "random_k", 2, jax.random.key(seed)))
    chosen = {n for n, g in zip(names, gates) if float(g) == 1.0}
    assert len(chosen) == 2 and not any("bn" in n for n in chosen)
    picks.append(frozenset(chosen))
  assert len(set(picks)) > 1
  stem = jax.tree.leaves(scrub_noise.noise_gates(original.params, "stem", 0, jax.random.key(0)))
  assert [n for n, g in zip(names, stem) if float(g)] == ["conv1/kernel"]


def test_scrub_noise_noises_only_the_chosen_leaves_and_keeps_the_teacher_clean(data, cnn):
  model, original = cnn
  # lr 0: the student stays at its noised start, so the output shows the noise itself, and the
  # max-epoch loss is −DistillKL(un-noised teacher, noised student) over D_f (one batch of 16).
  method = get_method("scrub_noise", model, noise_scope="random_k", k=2, sigma=0.3, lr=0.0, epochs=1,
                      msteps=1, batch_size=64, forget_batch_size=16, momentum=0.0, weight_decay=0.0)
  key = jax.random.key(4)
  out = jax.jit(method.unlearn)(original, data, key)
  names = toolkit.leaf_names(original.params)
  moved = [n for n, a, b in zip(names, jax.tree.leaves(out.state.params), jax.tree.leaves(original.params))
           if float(jnp.max(jnp.abs(a - b))) > 0]
  assert len(moved) == 2 and not any("bn" in n for n in moved)
  x, _ = data.gather(data.forget)
  teacher = steps.apply_eval(model, original.params, original.batch_stats, x)
  student, _ = steps.apply_train(model, out.state.params, original.batch_stats, x)
  T = method.hyperparameters["temperature"]
  pt = jax.nn.softmax(teacher / T)
  kl = jnp.sum(pt * (jax.nn.log_softmax(teacher / T) - jax.nn.log_softmax(student / T))) / x.shape[0] * T * T
  assert float(kl) > 1e-3
  np.testing.assert_allclose(float(out.metrics["max_loss"][0]), -float(kl), rtol=1e-4)


def test_scrub_noise_relative_scale_and_reinjection_before_the_last_epoch(data, cnn):
  model, original = cnn
  gates = scrub_noise.noise_gates(original.params, "non_bn", 0, jax.random.key(0))
  noised = scrub_noise.add_noise(original.params, gates, 0.5, True, jax.random.key(1))
  kernel, new = np.asarray(original.params["head"]["kernel"]), np.asarray(noised["head"]["kernel"])
  assert np.std(new - kernel) == pytest.approx(0.5 * np.std(kernel), rel=0.15)
  np.testing.assert_array_equal(np.asarray(noised["bn1"]["scale"]), np.asarray(original.params["bn1"]["scale"]))
  # lr 0: the output is the start plus the second draw, which lands on the same set S (the stem)
  # only when reinject_sigma > 0.
  kw = dict(noise_scope="stem", sigma=0.2, lr=0.0, epochs=2, msteps=0, batch_size=64, forget_batch_size=16)
  key = jax.random.key(8)
  once = jax.jit(get_method("scrub_noise", model, **kw).unlearn)(original, data, key).state.params
  twice = jax.jit(get_method("scrub_noise", model, reinject_sigma=0.05, **kw).unlearn)(original, data, key).state.params
  for name, a, b in zip(toolkit.leaf_names(once), jax.tree.leaves(once), jax.tree.leaves(twice)):
    extra = np.asarray(b) - np.asarray(a)
    if name == "conv1/kernel":
      assert np.std(extra) == pytest.approx(0.05, rel=0.3)
    else:
      assert not np.any(extra), name
