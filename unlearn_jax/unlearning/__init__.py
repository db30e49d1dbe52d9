"""Unlearning methods: an explicit registry from name to factory ``make(model, **hparams)``."""

from unlearn_jax.unlearning import finetune
from unlearn_jax.unlearning import none
from unlearn_jax.unlearning import retrain
# --- baseline imports (one per line, alphabetical) ---
# --- competition-entry imports (one per line, alphabetical) ---
from unlearn_jax.unlearning.base import ModelState
from unlearn_jax.unlearning.base import SetSizes
from unlearn_jax.unlearning.base import UnlearningMethod
from unlearn_jax.unlearning.base import UnlearnResult

METHODS = {
    "none": none.make,
    "retrain": retrain.make,
    "finetune": finetune.make,
    # --- baselines ---
    # --- competition entries ---
}


def get_method(name: str, model, **hyperparameters) -> UnlearningMethod:
  """Builds method ``name`` for ``model`` with its reference hyperparameters, overridden by ``hyperparameters``."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
  return METHODS[name](model, **hyperparameters)
