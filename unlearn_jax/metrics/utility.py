"""Accuracy helpers and the competition's final score (its "Score" rule)."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


def accuracy(logits: jax.Array, labels: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
  """Fraction of ``argmax(logits, -1) == labels`` over the last example axis, counting only ``mask``.

  ``logits`` is ``[..., B, C]``, ``labels`` ``[B]`` (broadcast), ``mask`` ``[B]`` bool or None.
  """
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  if mask is None:
    return jnp.mean(correct, axis=-1)
  mask = jnp.asarray(mask, jnp.float32)
  return jnp.sum(correct * mask, axis=-1) / jnp.maximum(jnp.sum(mask), 1.0)


def final_score(forgetting_quality: float, retain_acc_unlearned: Any, retain_acc_retrained: Any,
                test_acc_unlearned: Any, test_acc_retrained: Any) -> float:
  """``F * (mean RA_U / mean RA_R) * (mean TA_U / mean TA_R)``, not capped at 1.

  Each accuracy argument is a scalar or a per-model array (averaged here), in any common
  unit (fractions or percent, the same for U and R).

  >>> round(final_score(0.1, [98.0], [99.0], [95.0], [96.0]), 6)
  0.097959
  """
  means = {}
  for name, value in (("retain_acc_unlearned", retain_acc_unlearned),
                      ("retain_acc_retrained", retain_acc_retrained),
                      ("test_acc_unlearned", test_acc_unlearned),
                      ("test_acc_retrained", test_acc_retrained)):
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
      raise ValueError(f"{name} must be a non-empty finite array, got {arr.size} values")
    means[name] = float(arr.mean())
  for name in ("retain_acc_retrained", "test_acc_retrained"):
    if means[name] <= 0:
      raise ValueError(f"{name} must have a positive mean, got {means[name]}")
  return float(forgetting_quality * (means["retain_acc_unlearned"] / means["retain_acc_retrained"])
               * (means["test_acc_unlearned"] / means["test_acc_retrained"]))
