"""Logit-scaled confidence of the true label, as scored by the NeurIPS 2023 unlearning competition.

``c = log(p_y + 1e-45) - log(sum_{k != y} p_k + 1e-45)`` with ``p = softmax(logits)``
(the competition metric specification; the LiRA score of Carlini et al., arXiv 2112.03570,
as the organizers' ``metric.py`` computes it). The organizers take NumPy float32 ``exp``
of max-shifted logits, then normalise in float64, so ``c`` saturates at
``-log(1e-45) = +-103.6163`` and, beyond about +-87, the float32 terms are subnormal:
multiples of ``2**-149``.

Here everything stays in log space, so no value underflows: a class mass
``sum_k float32(exp(z_k))`` is the log-sum-exp of its normal-range terms combined with
``2**-149`` times the rounded count of subnormal units, ``round(exp(z_k + 149 ln 2))``,
of the others. That reproduces the organizers' values across the whole range (within a
few float32 ulps, also at the saturation: logits ``[200, 0, 0]`` with label 0 give
103.616329) even though XLA's CPU backend flushes subnormals to zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LOG_FLOOR = float(np.log(1e-45))  # -103.61632918473207
LOG_UNIT = float(-149 * np.log(2.0))  # log of the smallest float32 subnormal
LOG_NORMAL_MIN = float(np.log(np.float64(2.0) ** -126))  # exp below this is subnormal in float32


def _log_mass(z: jax.Array, mask: jax.Array) -> jax.Array:
  """``log(sum_k mask_k * float32(exp(z_k)))`` with subnormal terms rounded to units of ``2**-149``."""
  normal = mask & (z >= LOG_NORMAL_MIN)
  subnormal = mask & (z < LOG_NORMAL_MIN)
  log_normal = jax.nn.logsumexp(jnp.where(normal, z, -jnp.inf), axis=-1)
  units = jnp.round(jnp.exp(jnp.where(subnormal, z - LOG_UNIT, -jnp.inf)))
  return jnp.logaddexp(log_normal, jnp.log(jnp.sum(units, axis=-1)) + LOG_UNIT)


@jax.jit
def logit_scaled_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[..., C]`` logits and ``[...]`` integer labels -> ``[...]`` logit-scaled confidences.

  Computed in the logits' floating dtype (float32 for float32 logits) in log space:
  ``log p_y = log_mass({y}) - log_mass(all)`` and likewise for the other classes, each
  floored through ``logaddexp`` with ``log(1e-45)``.

  >>> float(logit_scaled_confidence(jnp.array([2.0, 1.0, 0.0]), jnp.array(0)))  # doctest: +ELLIPSIS
  0.68673...
  >>> float(logit_scaled_confidence(jnp.array([200.0, 0.0, 0.0]), jnp.array(0)))  # doctest: +ELLIPSIS
  103.6163...
  """
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    logits = logits.astype(jnp.float32)
  z = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  onehot = jax.nn.one_hot(jnp.asarray(labels), z.shape[-1], dtype=bool)
  log_total = _log_mass(z, jnp.ones_like(onehot))
  log_true = _log_mass(z, onehot) - log_total
  log_wrong = _log_mass(z, ~onehot) - log_total
  floor = jnp.asarray(LOG_FLOOR, z.dtype)
  return jnp.logaddexp(log_true, floor) - jnp.logaddexp(log_wrong, floor)
