"""``retrain``: train from scratch on the retain set — the gold standard.

Uses the same recipe as the retrained reference models (by default the
competition's), from a fresh per-seed initialisation and data order. As a
"method" it should score the perfect-unlearner forgetting quality (≈0.18).
"""

from __future__ import annotations

from typing import Optional

from unlearn_jax.training import engine
from unlearn_jax.training.recipes import RECIPES, Recipe, competition_recipe
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

HPARAMS = (
    HParam("recipe", "str", None, choices=tuple(RECIPES), optional=True,
           doc="training recipe by name (None: the pipeline's recipe, or the competition recipe)"),
)


def make(model, recipe: Optional[Recipe | str] = None) -> UnlearningMethod:
  """Retraining on D_r with ``recipe`` (a :class:`Recipe` or a name of ``RECIPES``; default: the competition recipe)."""
  if isinstance(recipe, str):
    if recipe not in RECIPES:
      raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(RECIPES)}")
    recipe = RECIPES[recipe]()
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
