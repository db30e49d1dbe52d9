"""Training recipes as data, and the PyTorch-equivalent optax optimisers they build.

PyTorch semantics matched here (and tested):

* weight decay is *coupled* L2 (``add_decayed_weights`` before the optimiser),
  applied to every parameter, BN scale/bias and biases included;
* ``CosineAnnealingLR(T_max=E)`` stepped per epoch: the rate is constant within
  an epoch, ``η_e = η_min + (η₀ − η_min)(1 + cos(πe/E))/2``;
* class-weighted cross-entropy divides by the sum of the weights, not by B.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax.numpy as jnp
import optax

from unlearn_jax import _validate

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine_epoch", "cosine_step", "epoch_table")
LOSSES = ("ce", "weighted_ce")
AUGMENTS = ("none", "crop_flip")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Everything that defines how one model is trained. Hashable; keys caches.

  Attributes:
    optimizer: ``"sgd"`` (torch SGD with momentum) or ``"adam"``.
    lr: base learning rate.
    momentum: SGD momentum (ignored by Adam).
    weight_decay: coupled L2 coefficient (torch ``weight_decay``).
    schedule: ``constant``, ``cosine_epoch`` (torch CosineAnnealingLR stepped
      per epoch with ``T_max = cosine_epochs or epochs``), ``cosine_step``
      (per step down to ``min_lr``) or ``epoch_table`` (``lr * lr_table[e]``).
    epochs: number of passes over the training set.
    batch_size: batch size; the remainder batch is kept (torch ``drop_last=False``).
    loss: ``ce`` or ``weighted_ce`` (w_c = 1 / count_c over the training set).
    augment: ``none`` or ``crop_flip`` (random crop with 4-pixel padding + horizontal flip).
    best_val: keep the parameters of the best validation-accuracy epoch.
    min_save_epoch: first epoch (0-based) eligible as the best checkpoint.
  """

  optimizer: str = "adam"
  lr: float = 1e-4
  momentum: float = 0.9
  weight_decay: float = 5e-3
  schedule: str = "cosine_epoch"
  epochs: int = 30
  batch_size: int = 64
  loss: str = "weighted_ce"
  augment: str = "none"
  best_val: bool = True
  min_save_epoch: int = 20
  cosine_epochs: Optional[int] = None
  min_lr: float = 0.0
  lr_table: Optional[tuple[float, ...]] = None

  def __post_init__(self):
    _validate.check_in("optimizer", self.optimizer, OPTIMIZERS)
    _validate.check_in("schedule", self.schedule, SCHEDULES)
    _validate.check_in("loss", self.loss, LOSSES)
    _validate.check_in("augment", self.augment, AUGMENTS)
    _validate.check_positive_int("epochs", self.epochs)
    _validate.check_positive_int("batch_size", self.batch_size)
    if self.lr <= 0:
      raise ValueError(f"lr must be positive, got {self.lr}")
    if self.schedule == "epoch_table" and (self.lr_table is None or len(self.lr_table) < self.epochs):
      raise ValueError(f"schedule 'epoch_table' needs lr_table with >= {self.epochs} entries")

  def replace(self, **kw) -> "Recipe":
    return dataclasses.replace(self, **kw)


def competition_recipe(**overrides) -> Recipe:
  """The competition's original/retrain recipe (Adam 1e-4, coupled wd 5e-3, cosine 30, weighted CE, bs 64)."""
  return Recipe(**overrides)


def starting_kit_recipe(**overrides) -> Recipe:
  """The CIFAR-10 starting kit's recipe: SGD 0.1 / 0.9 / 5e-4 with crop+flip.

  The kit states no epoch count or schedule; 30 epochs with per-epoch cosine is our default.
  """
  base = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine_epoch",
              epochs=30, batch_size=128, loss="ce", augment="crop_flip", best_val=False, min_save_epoch=0)
  base.update(overrides)
  return Recipe(**base)


def digits_recipe(**overrides) -> Recipe:
  """A quick recipe for the embedded digits data: the competition's recipe shape, scaled down.

  Adam with coupled decay, per-epoch cosine, class-weighted CE, best-validation
  checkpoint over the last half. 20 epochs at bs 64 reach ~97% test accuracy
  with the MLP.
  """
  base = dict(optimizer="adam", lr=1e-3, weight_decay=5e-4, schedule="cosine_epoch", epochs=20,
              batch_size=64, loss="weighted_ce", augment="none", best_val=True, min_save_epoch=10)
  base.update(overrides)
  return Recipe(**base)


RECIPES = {
    "competition": competition_recipe,
    "starting_kit": starting_kit_recipe,
    "digits": digits_recipe,
}


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Batches per epoch with the remainder kept (torch ``drop_last=False``)."""
  return math.ceil(num_examples / batch_size)


def per_epoch_cosine(lr: float, epochs: int, min_lr: float = 0.0):
  """Rate of torch ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch, as a function of the epoch."""

  def fn(epoch):
    if epochs <= 1:
      return jnp.asarray(lr, jnp.float32) * jnp.ones_like(epoch, jnp.float32)
    return min_lr + (lr - min_lr) * (1 + jnp.cos(jnp.pi * epoch / epochs)) / 2

  return fn


def learning_rate_fn(recipe: Recipe, steps_in_epoch: int):
  """``step -> lr`` for ``recipe``, where ``steps_in_epoch`` counts the remainder batch."""
  if recipe.schedule == "constant":
    return lambda step: jnp.asarray(recipe.lr, jnp.float32)
  if recipe.schedule == "cosine_epoch":
    epoch_fn = per_epoch_cosine(recipe.lr, recipe.cosine_epochs or recipe.epochs, recipe.min_lr)
    return lambda step: epoch_fn(step // steps_in_epoch).astype(jnp.float32)
  if recipe.schedule == "cosine_step":
    total = recipe.epochs * steps_in_epoch
    return optax.cosine_decay_schedule(recipe.lr, total, alpha=recipe.min_lr / recipe.lr)
  table = jnp.asarray(recipe.lr_table, jnp.float32) * recipe.lr
  return lambda step: table[jnp.minimum(step // steps_in_epoch, len(recipe.lr_table) - 1)]


def torch_optimizer(
    optimizer: str,
    learning_rate,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  """torch ``SGD``/``Adam`` with coupled L2 decay, as an optax chain.

  ``learning_rate`` may be a float or an ``optax`` schedule of the update count.
  """
  _validate.check_in("optimizer", optimizer, OPTIMIZERS)
  parts = []
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  if optimizer == "sgd":
    parts.append(optax.sgd(learning_rate, momentum=momentum or None))
  else:
    parts.append(optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8))
  return optax.chain(*parts)


def make_optimizer(recipe: Recipe, steps_in_epoch: int) -> optax.GradientTransformation:
  """The optax optimiser of ``recipe``."""
  return torch_optimizer(recipe.optimizer, learning_rate_fn(recipe, steps_in_epoch),
                         recipe.momentum, recipe.weight_decay)
