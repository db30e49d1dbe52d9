"""Losses with PyTorch's reductions."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: Optional[jax.Array] = None) -> jax.Array:
  """Batch cross-entropy as torch ``CrossEntropyLoss(weight=w)`` computes it.

  Unweighted: the batch mean. Weighted: ``sum_i w[y_i] l_i / sum_i w[y_i]``.
  """
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  if class_weights is None:
    return per_example.mean()
  w = class_weights[labels]
  return (w * per_example).sum() / w.sum()


def per_example_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Unreduced cross-entropy ``[B]``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array, temperature: float = 1.0,
                  reduction: str = "batchmean") -> jax.Array:
  """KL(p || q) between softmax(p/T) and softmax(q/T) with torch's reductions.

  ``batchmean`` divides the sum by B, ``mean`` by B·C (torch's default).
  """
  logp = jax.nn.log_softmax(p_logits / temperature, axis=-1)
  logq = jax.nn.log_softmax(q_logits / temperature, axis=-1)
  kl = (jnp.exp(logp) * (logp - logq)).sum()
  if reduction == "batchmean":
    return kl / p_logits.shape[0]
  if reduction == "mean":
    return kl / p_logits.size
  raise ValueError(f"unknown reduction {reduction!r}; expected 'batchmean' or 'mean'")
