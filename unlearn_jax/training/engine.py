"""One training run of one seed, as a pure function of a key.

The engine knows nothing of the seed axis: ``make_train_fn`` returns
``train(key, data) -> TrainResult`` and :mod:`unlearn_jax.seeds` decides how
many seeds run and how (vmap, chunks, loop, devices). Epochs are a
``lax.scan``; each epoch visits the split in the order
``permutation(fold_in(data_key, epoch))`` in full batches (a scan) followed by
the remainder batch (a second step of its own static shape), as a torch loader
with ``drop_last=False`` does.

Key streams: ``fold_in(key, 0)`` initialises the model, ``fold_in(key, 1)``
drives the data: per epoch, its ``fold_in(., epoch)`` orders the split and a
sibling branch gives each step its own key (augmentation). A new stream never
shifts the others.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from unlearn_jax.training import recipes as recipes_lib
from unlearn_jax.training.state import TrainState, init_variables
from unlearn_jax.training.steps import accuracy, make_predict_fn, make_train_step

INIT_STREAM, DATA_STREAM = 0, 1


@flax.struct.dataclass
class TrainResult:
  """What a training run returns.

  Attributes:
    params, batch_stats: the kept model (best-validation epoch when the recipe asks for it).
    best_epoch: the epoch whose model was kept (0-based).
    train_loss: ``[epochs]`` mean training loss per epoch.
    val_accuracy: ``[epochs]`` validation accuracy after each epoch.
  """

  params: Any
  batch_stats: Any
  best_epoch: jax.Array
  train_loss: jax.Array
  val_accuracy: jax.Array


def run_epoch(step_fn, state, data, indices: jax.Array, batch_size: int, key: jax.Array,
              epoch: jax.Array):
  """One shuffled pass of ``step_fn`` over ``indices``; returns ``(state, mean_loss)``.

  ``step_fn(state, (x, y), key)``. The order is ``permutation(fold_in(key, epoch))``;
  full batches run in a ``lax.scan`` and the remainder as one more step.
  """
  n = indices.shape[0]
  nb, rem = divmod(n, batch_size)
  epoch_key = jax.random.fold_in(key, epoch)
  order = indices[jax.random.permutation(jax.random.fold_in(epoch_key, 0), n)]
  step_keys = jax.random.split(jax.random.fold_in(epoch_key, 1), nb + 1)

  def body(state, xs):
    idx, k = xs
    state, metrics = step_fn(state, data.gather(idx), k)
    return state, metrics["loss"]

  total = jnp.zeros((), jnp.float32)
  if nb:
    state, batch_losses = jax.lax.scan(body, state, (order[: nb * batch_size].reshape(nb, batch_size), step_keys[:nb]))
    total = batch_losses.sum() * batch_size
  if rem:
    state, last = body(state, (order[nb * batch_size:], step_keys[nb]))
    total = total + last * rem
  return state, total / n


def class_weights_for(data, split: str) -> jax.Array:
  """``1 / count_c`` over ``split`` (0 for absent classes), the competition's loss weights."""
  counts = data.class_counts(split)
  return jnp.where(counts > 0, 1.0 / jnp.maximum(counts, 1.0), 0.0)


def make_train_fn(
    model,
    recipe: recipes_lib.Recipe,
    split: str = "train",
    eval_batch_size: int = 512,
) -> Callable[[jax.Array, Any], TrainResult]:
  """Builds ``train(key, data) -> TrainResult`` for one seed.

  Args:
    model: a Flax module from :mod:`unlearn_jax.models`.
    recipe: the training recipe.
    split: ``"train"`` for the original model, ``"retain"`` for retraining.
    eval_batch_size: chunk size of the per-epoch validation pass.
  """
  predict = make_predict_fn(model, eval_batch_size)

  def train(key: jax.Array, data) -> TrainResult:
    indices = data.split(split)
    n_steps = recipes_lib.steps_per_epoch(indices.shape[0], recipe.batch_size)
    tx = recipes_lib.make_optimizer(recipe, n_steps)
    params, batch_stats = init_variables(model, jax.random.fold_in(key, INIT_STREAM), data.image_shape)
    state = TrainState.create(params, batch_stats, tx)
    weights = class_weights_for(data, split) if recipe.loss == "weighted_ce" else None
    step = make_train_step(model, tx, weights, recipe.augment)
    data_key = jax.random.fold_in(key, DATA_STREAM)
    val_idx = data.validation

    def epoch_fn(carry, epoch):
      state, best = carry
      state, loss = run_epoch(step, state, data, indices, recipe.batch_size, data_key, epoch)
      val_acc = accuracy(predict(state.params, state.batch_stats, data, val_idx), data.labels[val_idx])
      better = (epoch >= recipe.min_save_epoch) & (val_acc > best["acc"])
      if recipe.best_val:
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                            dict(params=state.params, batch_stats=state.batch_stats, acc=val_acc, epoch=epoch),
                            best)
      return (state, best), (loss, val_acc)

    best0 = dict(params=state.params, batch_stats=state.batch_stats, acc=jnp.asarray(-1.0, jnp.float32),
                 epoch=jnp.asarray(-1, jnp.int32))
    (state, best), (losses, val_accs) = jax.lax.scan(
        epoch_fn, (state, best0), jnp.arange(recipe.epochs, dtype=jnp.int32))
    if recipe.best_val:
      return TrainResult(best["params"], best["batch_stats"], best["epoch"], losses, val_accs)
    return TrainResult(state.params, state.batch_stats, jnp.asarray(recipe.epochs - 1, jnp.int32), losses, val_accs)

  return train
