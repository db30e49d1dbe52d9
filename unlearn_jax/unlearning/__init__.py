"""Unlearning methods: an explicit registry from name to factory ``make(model, **hparams)``."""

from unlearn_jax.unlearning import finetune
from unlearn_jax.unlearning import none
from unlearn_jax.unlearning import retrain
# --- baseline imports (one per line, alphabetical) ---
from unlearn_jax.unlearning import bad_teacher
from unlearn_jax.unlearning import fisher
from unlearn_jax.unlearning import l1_sparse
from unlearn_jax.unlearning import neggrad
from unlearn_jax.unlearning import neggrad_plus
from unlearn_jax.unlearning import random_label
from unlearn_jax.unlearning import salun
from unlearn_jax.unlearning import scrub
from unlearn_jax.unlearning import scrub_noise
# --- competition-entry imports (one per line, alphabetical) ---
from unlearn_jax.unlearning import amnesiacs
from unlearn_jax.unlearning import conv_transpose
from unlearn_jax.unlearning import fanchuan
from unlearn_jax.unlearning import forget_cycles
from unlearn_jax.unlearning import kookmin
from unlearn_jax.unlearning import oleszko
from unlearn_jax.unlearning import random_mask
from unlearn_jax.unlearning import seif
from unlearn_jax.unlearning import sun
from unlearn_jax.unlearning.base import ModelState
from unlearn_jax.unlearning.base import SetSizes
from unlearn_jax.unlearning.base import UnlearningMethod
from unlearn_jax.unlearning.base import UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

METHODS = {
    "none": none.make,
    "retrain": retrain.make,
    "finetune": finetune.make,
    # --- baselines ---
    "neggrad": neggrad.make,
    "neggrad_plus": neggrad_plus.make,
    "scrub": scrub.make,
    "scrub_noise": scrub_noise.make,
    "random_label": random_label.make,
    "bad_teacher": bad_teacher.make,
    "l1_sparse": l1_sparse.make,
    "salun": salun.make,
    "fisher": fisher.make,
    # --- competition entries ---
    "fanchuan": fanchuan.make,
    "kookmin": kookmin.make,
    "seif": seif.make,
    "oleszko": oleszko.make,
    "conv_transpose": conv_transpose.make,
    "amnesiacs": amnesiacs.make,
    "sun": sun.make,
    "forget_cycles": forget_cycles.make,
    "random_mask": random_mask.make,
}


def get_method(name: str, model, **hyperparameters) -> UnlearningMethod:
  """Builds method ``name`` for ``model`` with its reference hyperparameters, overridden by ``hyperparameters``."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
  return METHODS[name](model, **hyperparameters)
