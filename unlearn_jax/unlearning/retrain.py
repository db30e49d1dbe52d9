"""``retrain``: train from scratch on the retain set — the gold standard.

Uses the same recipe as the retrained reference models (by default the
competition's), from a fresh per-seed initialisation and data order. As a
"method" it should score the perfect-unlearner forgetting quality (≈0.18).
"""

from __future__ import annotations

from typing import Optional

from unlearn_jax.training import engine
from unlearn_jax.training.recipes import Recipe, competition_recipe
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult


def make(model, recipe: Optional[Recipe] = None) -> UnlearningMethod:
  """Retraining on D_r with ``recipe`` (default: the competition recipe)."""
  recipe = recipe or competition_recipe()
  train = engine.make_train_fn(model, recipe, split="retain")

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    del original
    result = train(key, data)
    return UnlearnResult(ModelState(result.params, result.batch_stats),
                         {"loss": result.train_loss, "val_accuracy": result.val_accuracy})

  return UnlearningMethod("retrain", unlearn, lambda sizes: float(recipe.epochs),
                          "retraining from scratch on the retain set (competition oracle)",
                          {"recipe": recipe})
