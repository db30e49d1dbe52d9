"""Logit-scaled confidence of the true label, as scored by the NeurIPS 2023 unlearning competition.

``c = log(p_y + 1e-45) - log(sum_{k != y} p_k + 1e-45)`` with ``p = softmax(logits)``
(``/work/shared/spec/metric.md``; the LiRA score of Carlini et al., arXiv 2112.03570,
as the organizers' ``metric.py`` computes it). The organizers take float32 ``exp`` of
max-shifted logits, so ``c`` saturates at ``-log(1e-45) = +-103.6163``. Here both logs
are taken stably as ``logaddexp(log p, log 1e-45)`` from log-softmax terms, which keeps
that saturation without overflow: logits ``[200, 0, 0]`` with label 0 give 103.616329.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LOG_FLOOR = float(np.log(1e-45))  # -103.61632918473207


@jax.jit
def logit_scaled_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[..., C]`` logits and ``[...]`` integer labels -> ``[...]`` logit-scaled confidences.

  Computed in the logits' floating dtype (float32 for float32 logits), stably: the true
  class term is ``z_y - logsumexp(z)`` and the rest ``logsumexp(z_{k != y}) - logsumexp(z)``,
  each floored through ``logaddexp`` with ``log(1e-45)``.

  >>> float(logit_scaled_confidence(jnp.array([2.0, 1.0, 0.0]), jnp.array(0)))  # doctest: +ELLIPSIS
  0.68673...
  >>> float(logit_scaled_confidence(jnp.array([200.0, 0.0, 0.0]), jnp.array(0)))  # doctest: +ELLIPSIS
  103.6163...
  """
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    logits = logits.astype(jnp.float32)
  labels = jnp.asarray(labels)
  z = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  lse_all = jax.nn.logsumexp(z, axis=-1)
  onehot = jax.nn.one_hot(labels, z.shape[-1], dtype=bool)
  z_true = jnp.sum(jnp.where(onehot, z, 0.0), axis=-1)
  lse_wrong = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, z), axis=-1)
  floor = jnp.asarray(LOG_FLOOR, z.dtype)
  log_true = jnp.logaddexp(z_true - lse_all, floor)
  log_wrong = jnp.logaddexp(lse_wrong - lse_all, floor)
  return log_true - log_wrong
