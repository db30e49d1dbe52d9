"""``amnesiacs`` (``docs/algorithms.md`` §6.16): what makes the method that method."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from tests.methods.support import flat, run
from unlearn_jax.models import get_model
from unlearn_jax.training import steps
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import ModelState, amnesiacs, toolkit


def _filtered_warmup_reference(model, original, data, key, cls, batch_size, epochs, temperature=5.0):
  """Amnesiacs' reset and class-filtered warm-up written as a plain loader: a Python loop over
  the shuffled validation examples of class ``cls`` in batches (no padding, no masks)."""
  stem, head = toolkit.stem_module(original.params), toolkit.head_module(original.params)
  params = toolkit.reinit_modules(jax.random.fold_in(key, amnesiacs.RESET_STREAM), original.params, [stem, head],
                                  "torch_default")

  def loss(params, batch_stats, batch, key):
    x, _ = batch
    t = jax.nn.log_softmax(steps.apply_eval(model, original.params, original.batch_stats, x) / temperature, -1)
    logits, stats = steps.apply_train(model, params, batch_stats, x)
    s = jax.nn.log_softmax(logits / temperature, -1)
    return (jnp.exp(t) * (t - s)).sum(-1).mean(), (stats, {})

  tx = torch_optimizer("sgd", 9e-4, 0.9, 5e-4)
  step = jax.jit(toolkit.make_step(loss, tx))
  state = toolkit.start(ModelState(params, original.batch_stats), tx)
  warm_key = jax.random.fold_in(key, amnesiacs.WARMUP_STREAM)
  val, labels = np.asarray(data.validation), np.asarray(data.labels)
  for e in range(epochs):
    epoch_key = jax.random.fold_in(warm_key, e)
    order = val[np.asarray(jax.random.permutation(jax.random.fold_in(epoch_key, 0), len(val)))]
    chosen = order[labels[order] == cls]
    for j in range(0, len(chosen), batch_size):
      state, _ = step(state, data.gather(jnp.asarray(chosen[j:j + batch_size])), jax.random.key(0))
  return state


def _max_abs(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_amnesiacs_resets_stem_and_head_only(tiny, trained, data):
  result = run(amnesiacs.make(tiny, warmup_epochs=0, epochs=0), trained, data)
  got, orig = flat(result.state.params), flat(trained.params)
  for n, fan in (("conv1/kernel", 9), ("head/kernel", 8), ("head/bias", 8)):
    assert not np.any(got[n] == orig[n])
    assert (np.abs(got[n]) <= 1 / math.sqrt(fan)).all()
  for n in ("bn1/scale", "bn1/bias"):
    np.testing.assert_array_equal(got[n], orig[n])
  other = flat(run(amnesiacs.make(tiny, warmup_epochs=0, epochs=0), trained, data, seed=2).state.params)
  assert not np.array_equal(other["conv1/kernel"], got["conv1/kernel"])
  # A warm-up restricted to a class absent from D_v (class 5 in this split) never updates.
  assert 5 not in set(np.asarray(data.labels[data.validation]).tolist())
  still = run(amnesiacs.make(tiny, epochs=0, warmup_classes=(5,)), trained, data)
  for a, b in zip(jax.tree.leaves(still.state.params), jax.tree.leaves(result.state.params)):
    np.testing.assert_array_equal(a, b)
  assert np.asarray(still.metrics["warmup_loss"]).shape == (3,)


def test_amnesiacs_class_filtered_warmup_equals_a_filtered_loader(tiny, trained, data):
  labels = np.asarray(data.labels[data.validation])
  cls = int(np.bincount(labels).argmax())
  n_cls = int((labels == cls).sum())
  batch = n_cls // 2 if n_cls % 2 == 0 else n_cls  # whole batches only: batch norm sees exactly the subset
  assert n_cls >= 2 and n_cls % batch == 0
  method = amnesiacs.make(tiny, warmup_epochs=2, epochs=0, batch_size=batch, warmup_classes=(cls,))
  got = run(method, trained, data, seed=4)
  ref = _filtered_warmup_reference(tiny, trained, data, jax.random.key(4), cls, batch, epochs=2)
  assert int(ref.step) == 2 * (n_cls // batch)
  for a, b in zip(jax.tree.leaves(got.state), jax.tree.leaves((ref.params, ref.batch_stats)), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # the filter is real: with every class the warm-up ends elsewhere
  everything = run(amnesiacs.make(tiny, warmup_epochs=2, epochs=0, batch_size=batch), trained, data, seed=4)
  assert _max_abs(everything.state.params, got.state.params) > 1e-4


def test_amnesiacs_resnet_roles(resnet_params):
  assert toolkit.stem_module(resnet_params) == "conv1" and toolkit.head_module(resnet_params) == "fc"
  mlp, _ = init_variables(get_model("mlp", 10), jax.random.key(0), (8, 8, 1))
  assert toolkit.stem_module(mlp) == "fc1" and toolkit.head_module(mlp) == "head"


def test_amnesiacs_warmup_distils_toward_the_teacher(tiny, trained, data):
  result = run(amnesiacs.make(tiny, warmup_epochs=3, warmup_lr=0.05, epochs=1), trained, data)
  warm = np.asarray(result.metrics["warmup_loss"])
  assert warm.shape == (3,) and warm[-1] < warm[0]
  assert result.metrics["loss"].shape == (1,) and np.isfinite(result.metrics["loss"]).all()
