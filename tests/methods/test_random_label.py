"""``random_label`` (``docs/algorithms.md`` §6.6): what makes the method that method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.methods.support import eval_ce
from unlearn_jax.training import steps
from unlearn_jax.unlearning import get_method, random_label


def test_random_label_draws_differ_per_seed_and_exclude_the_true_label(data):
  y = data.labels[data.train]
  others = [np.asarray(random_label.random_labels(jax.random.key(s), y, 10, "others")) for s in range(2)]
  assert not np.any(others[0] == np.asarray(y)) and not np.any(others[1] == np.asarray(y))
  assert np.mean(others[0] != others[1]) > 0.5
  assert len(np.unique(others[0])) == 10
  every = np.asarray(random_label.random_labels(jax.random.key(0), y, 10, "all"))
  assert 0.0 < np.mean(every == np.asarray(y)) < 0.3 and len(np.unique(every)) == 10


def test_random_label_forget_pass_trains_on_random_labels_per_seed(data, mlp):
  model, original = mlp
  # lr 0 keeps θ₀, so the forget-pass loss is the CE of θ₀ against the labels the method drew.
  method = get_method("random_label", model, lr=1e-30, momentum=0.0, weight_decay=0.0, epochs=1, batch_size=16)
  run = jax.jit(method.unlearn)
  losses = [float(run(original, data, jax.random.key(s)).metrics["forget_loss"][0]) for s in range(3)]
  true_ce = eval_ce(model, original, data, data.forget)
  assert len({round(v, 6) for v in losses}) == 3
  assert all(abs(v - true_ce) > 1e-4 for v in losses)


def test_random_label_bad_teacher_variant_trains_the_union_on_fixed_other_class_labels(data, mlp):
  model, original = mlp
  # lr 0 and one batch holding D_f ∪ D_r: the loss is the CE of θ₀ on the union with the forget
  # labels replaced once, by labels that are never the true one.
  method = get_method("random_label", model, variant="bad-teacher-repo", lr=0.0, epochs=2, batch_size=128)
  assert method.hyperparameters["optimizer"] == "adam" and method.hyperparameters["relabel"] == "others"
  got = np.asarray(jax.jit(method.unlearn)(original, data, jax.random.key(3)).metrics["loss"])
  x_f, y_f = data.gather(data.forget)
  x_r, y_r = data.gather(data.retain)
  logits_f = steps.apply_eval(model, original.params, original.batch_stats, x_f)
  logits_r = steps.apply_eval(model, original.params, original.batch_stats, x_r)
  ce_r = -np.asarray(jnp.take_along_axis(jax.nn.log_softmax(logits_r), y_r[:, None], 1)).sum()
  logp_f = np.asarray(jax.nn.log_softmax(logits_f))
  wrong = [np.delete(logp_f[i], int(y_f[i])) for i in range(len(y_f))]
  # Each forget term is the CE against one of the other classes: between their min and max.
  lo = (ce_r - sum(w.max() for w in wrong)) / 80
  hi = (ce_r - sum(w.min() for w in wrong)) / 80
  assert got[0] == pytest.approx(got[1], rel=1e-6)  # labels drawn once: both epochs see the same ones
  assert lo - 1e-6 <= got[0] <= hi + 1e-6
  true_loss = (ce_r - sum(logp_f[i, int(y_f[i])] for i in range(len(y_f)))) / 80
  assert abs(got[0] - true_loss) > 1e-4
