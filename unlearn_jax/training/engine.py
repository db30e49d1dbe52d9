"""One training run of one seed, as a pure function of a key.

The engine knows nothing of the seed axis: ``make_train_fn`` returns
``train(key, data) -> TrainResult`` and :mod:`unlearn_jax.seeds` decides how
many seeds run and how (vmap, chunks, loop, devices). Epochs are a
``lax.scan``; each epoch visits the split in the order
``permutation(fold_in(fold_in(data_key, epoch), 0))`` in full batches (a scan) followed by
the remainder batch (a second step of its own static shape), as a torch loader
with ``drop_last=False`` does. :func:`make_training` gives the same run in pieces (initial
state, a scan over any run of epochs, the checkpoint rule at the end), so a caller can run the
epochs one call at a time and time the first (the protocol's original model does).

Which model a run returns follows the recipe's :class:`~unlearn_jax.training.recipes.CheckpointRule`
for its role (``original`` when trained on the train split, ``retrained`` on
retain): the last epoch, or ``train_lib._test``'s best-validation rule with the
best accuracy carried over all epochs (:func:`checkpoint_update`). Class weights
come from the split the recipe names (by default the training split, for every role).

Key streams: ``fold_in(key, 0)`` initialises the model, ``fold_in(key, 1)``
drives the data: per epoch ``e``, ``fold_in(fold_in(., e), 0)`` orders the split and
``fold_in(fold_in(., e), 1)`` gives each step its own key (augmentation). A new stream never
shifts the others.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

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
    params, batch_stats: the kept model (per the recipe's checkpoint rule for the run's role).
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

  ``step_fn(state, (x, y), key)``. The order is ``permutation(fold_in(fold_in(key, epoch), 0))``,
  the step keys are split from ``fold_in(fold_in(key, epoch), 1)``; full batches run in a
  ``lax.scan`` and the remainder as one more step.
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


def class_weight_source(recipe: recipes_lib.Recipe, split: str) -> Optional[str]:
  """The split whose counts weight the loss of a run of ``recipe`` on ``split`` (``None``: unweighted)."""
  if recipe.loss != "weighted_ce":
    return None
  return "train" if recipe.class_weight_split == "train" else split


def default_role(split: str) -> str:
  """``original`` for a run on the train split, ``retrained`` otherwise."""
  return "original" if split == "train" else "retrained"


def checkpoint_init(model_tree: Any) -> dict[str, Any]:
  """The carry of :func:`checkpoint_update` before the first epoch (best accuracy 0, nothing kept)."""
  return dict(model=model_tree, best_acc=jnp.zeros((), jnp.float32), epoch=jnp.asarray(-1, jnp.int32))


def checkpoint_update(carry: dict[str, Any], model_tree: Any, val_acc: jax.Array, epoch: jax.Array,
                      min_save_epoch: int) -> dict[str, Any]:
  """One epoch of ``train_lib._test``'s rule: the best accuracy is carried over every epoch, and
  the model is kept when it beats it at ``epoch >= min_save_epoch`` (``carry["epoch"]`` stays -1
  while nothing has been kept)."""
  improved = val_acc > carry["best_acc"]
  keep = improved & (epoch >= min_save_epoch)
  kept = jax.tree.map(lambda new, old: jnp.where(keep, new, old), model_tree, carry["model"])
  return dict(model=kept, best_acc=jnp.where(improved, val_acc, carry["best_acc"]),
              epoch=jnp.where(keep, epoch, carry["epoch"]).astype(jnp.int32))


def describe_training(recipe: recipes_lib.Recipe, data) -> dict[str, Any]:
  """How the original and the retrained models are trained, for ``results.json``:
  per role, its split, checkpoint rule and the class counts its loss weights come from."""
  out = {}
  for role, split in (("original", "train"), ("retrained", "retain")):
    source = class_weight_source(recipe, split)
    rule = recipe.checkpoint_rule(role)
    counts = None if source is None else [int(c) for c in jax.device_get(data.class_counts(source))]
    out[role] = {"split": split, "checkpoint": rule.kind, "min_save_epoch": rule.min_save_epoch,
                 "class_weights_from": source, "class_counts": counts}
  return out


@dataclasses.dataclass(frozen=True)
class Training:
  """One training run cut at epoch boundaries, so a caller can run the epochs in pieces (and time the first).

  ``init(key, data) -> carry``; ``epochs(carry, data, epoch_ids) -> (carry, (losses, val_accs))`` runs the
  epochs ``epoch_ids`` (an int32 array, in order) as one ``lax.scan``; ``finish(carry, losses, val_accs)``
  applies the checkpoint rule to the whole run's per-epoch values. ``make_train_fn`` is the three in a row
  with every epoch in one scan.
  """

  init: Callable[[jax.Array, Any], Any]
  epochs: Callable[[Any, Any, jax.Array], Any]
  finish: Callable[[Any, jax.Array, jax.Array], TrainResult]
  num_epochs: int


def make_training(
    model,
    recipe: recipes_lib.Recipe,
    split: str = "train",
    eval_batch_size: int = 512,
    role: Optional[str] = None,
) -> Training:
  """The pieces of :func:`make_train_fn` (same arguments) as a :class:`Training`."""
  predict = make_predict_fn(model, eval_batch_size)
  rule = recipe.checkpoint_rule(role or default_role(split))
  weight_split = class_weight_source(recipe, split)

  def optimizer(data):
    indices = data.split(split)
    recipes_lib.check_total_steps(recipe, indices.shape[0], split)  # at trace time: shapes are static
    return indices, recipes_lib.make_optimizer(recipe, recipes_lib.steps_per_epoch(indices.shape[0],
                                                                                    recipe.batch_size))

  def init(key: jax.Array, data):
    _, tx = optimizer(data)
    params, batch_stats = init_variables(model, jax.random.fold_in(key, INIT_STREAM), data.image_shape)
    state = TrainState.create(params, batch_stats, tx)
    best = checkpoint_init((state.params, state.batch_stats)) if rule.kind == "best_val" else None
    return state, best, jax.random.fold_in(key, DATA_STREAM)

  def epochs(carry, data, epoch_ids: jax.Array):
    indices, tx = optimizer(data)
    weights = None if weight_split is None else class_weights_for(data, weight_split)
    step = make_train_step(model, tx, weights, recipe.augment)
    val_idx = data.validation
    state, best, data_key = carry

    def epoch_fn(carry, epoch):
      state, best = carry
      state, loss = run_epoch(step, state, data, indices, recipe.batch_size, data_key, epoch)
      val_acc = accuracy(predict(state.params, state.batch_stats, data, val_idx), data.labels[val_idx])
      if rule.kind == "best_val":
        best = checkpoint_update(best, (state.params, state.batch_stats), val_acc, epoch, rule.min_save_epoch)
      return (state, best), (loss, val_acc)

    (state, best), out = jax.lax.scan(epoch_fn, (state, best), epoch_ids)
    return (state, best, data_key), out

  def finish(carry, losses: jax.Array, val_accs: jax.Array) -> TrainResult:
    state, best, _ = carry
    last_epoch = jnp.asarray(recipe.epochs - 1, jnp.int32)
    if rule.kind == "best_val":  # nothing kept: the last epoch, as train_or_reload_model returns it
      found = best["epoch"] >= 0
      params, batch_stats = jax.tree.map(lambda b, s: jnp.where(found, b, s), best["model"],
                                         (state.params, state.batch_stats))
      return TrainResult(params, batch_stats, jnp.where(found, best["epoch"], last_epoch), losses, val_accs)
    return TrainResult(state.params, state.batch_stats, last_epoch, losses, val_accs)

  return Training(init, epochs, finish, recipe.epochs)


def make_train_fn(
    model,
    recipe: recipes_lib.Recipe,
    split: str = "train",
    eval_batch_size: int = 512,
    role: Optional[str] = None,
) -> Callable[[jax.Array, Any], TrainResult]:
  """Builds ``train(key, data) -> TrainResult`` for one seed: every epoch in one ``lax.scan``.

  Args:
    model: a Flax module from :mod:`unlearn_jax.models`.
    recipe: the training recipe.
    split: ``"train"`` for the original model, ``"retain"`` for retraining.
    eval_batch_size: chunk size of the per-epoch validation pass.
    role: whose checkpoint rule applies, ``original`` or ``retrained``
      (default: :func:`default_role` of ``split``).

  Raises:
    ValueError: (when traced) epochs x steps per epoch exceed ``recipes.MAX_TOTAL_STEPS``.
  """
  pieces = make_training(model, recipe, split, eval_batch_size, role)

  def train(key: jax.Array, data) -> TrainResult:
    carry, (losses, val_accs) = pieces.epochs(pieces.init(key, data), data,
                                              jnp.arange(recipe.epochs, dtype=jnp.int32))
    return pieces.finish(carry, losses, val_accs)

  return train
