"""``none``: return the original model unchanged — the "did nothing" reference point."""

from __future__ import annotations

import jax.numpy as jnp

from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

HPARAMS = ()


def make(model) -> UnlearningMethod:
  """The identity method. Its N runs are identical, so the metric scores it 0."""
  del model

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    del data, key
    return UnlearnResult(original, {"loss": jnp.zeros((0,), jnp.float32)})

  return UnlearningMethod("none", unlearn, lambda sizes: 0.0, "reference point: the original model", {})
