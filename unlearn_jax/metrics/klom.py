"""KLOM, the KL divergence of margins (``docs/evaluations.md`` section 5).

Georgiev et al., *Attribute-to-Delete: machine unlearning via datamodel matching*
(arXiv 2410.23232), as the EasyDUB benchmark computes it. Per example, over the models:
clip both samples of margins to [-100, 100]; 20 equal bins spanning the combined range
of both samples (numpy's ``histogram`` rule: bin b is ``[e_b, e_{b+1})``, the last one
closed, edges ``linspace(lo, hi, 21)`` bit for bit); ``p``, ``q`` the normalised
histograms of the unlearned and retrained margins;
``KLOM = sum_{p_b > 0} p_b log(p_b / max(q_b, 1e-5))``.

When every value of an example is equal (zero-width range) all 21 edges coincide and
both samples fall into the last bin: ``p = q`` and KLOM is 0.

One jitted function, vmapped over examples, float64 under a scoped ``jax.enable_x64``;
its memory is a small multiple of the input's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.metrics import privacy

NUM_BINS = 20
CLIP = 100.0
Q_FLOOR = 1e-5


def _example(u, r):
  """KLOM of one example from its ``[N]`` unlearned and retrained margins."""
  u = jnp.clip(u, -CLIP, CLIP)
  r = jnp.clip(r, -CLIP, CLIP)
  lo = jnp.minimum(jnp.min(u), jnp.min(r))
  hi = jnp.maximum(jnp.max(u), jnp.max(r))
  edges = privacy.linspace_at(jnp.arange(NUM_BINS + 1), lo, hi, NUM_BINS + 1)

  def hist(x):
    b = jnp.clip(jnp.searchsorted(edges, x, side="right") - 1, 0, NUM_BINS - 1)
    return jnp.zeros(NUM_BINS, x.dtype).at[b].add(1.0) / x.shape[0]

  p, q = hist(u), hist(r)
  terms = p * jnp.log(jnp.where(p > 0, p, 1.0) / jnp.maximum(q, Q_FLOOR))
  return jnp.sum(jnp.where(p > 0, terms, 0.0))


@jax.jit
def _klom_kernel(u, r):
  """``[E]`` KLOM of ``[N, E]`` float64 margins."""
  return jax.vmap(_example, in_axes=(1, 1))(u, r)


def _check_margins(name: str, value: Any) -> np.ndarray:
  arr = np.asarray(value)
  if arr.ndim != 2:
    raise ValueError(f"{name} must have shape [num_models, num_examples], got shape {arr.shape}")
  if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
    raise ValueError(f"{name} must be a real array, got dtype {arr.dtype}")
  arr = arr.astype(np.float64)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} must be finite; it has {int(np.sum(~np.isfinite(arr)))} non-finite values")
  return arr


def check_populations(unlearned: Any, retrained: Any, min_models: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Both ``[N, E]`` arrays as float64, same shape, finite, ``N >= min_models``, ``E >= 1`` (else ValueError)."""
  u = _check_margins("unlearned", unlearned)
  r = _check_margins("retrained", retrained)
  if u.shape != r.shape:
    raise ValueError(f"unlearned and retrained must have the same shape [N, E], got {u.shape} and {r.shape}")
  if u.shape[0] < min_models:
    raise ValueError(f"need at least {min_models} models per kind, got N = {u.shape[0]}")
  if u.shape[1] < 1:
    raise ValueError(f"need at least 1 example (E >= 1), got E = {u.shape[1]}")
  return u, r


def klom(unlearned: Any, retrained: Any) -> np.ndarray:
  """``[E]`` float64 KLOM of each example from ``[N, E]`` margins of N unlearned and N retrained models.

  Lower is better; 0 means identical histograms.

  >>> import numpy as np
  >>> x = np.random.default_rng(0).normal(size=(16, 3))
  >>> klom(x, x).tolist()
  [0.0, 0.0, 0.0]
  """
  u, r = check_populations(unlearned, retrained)
  with jax.enable_x64(True):
    return np.asarray(_klom_kernel(jnp.asarray(u), jnp.asarray(r)), np.float64)


def klom_summary(values: Any) -> dict[str, float]:
  """``{"mean", "p95"}`` of per-example KLOM values (the 95th percentile by numpy's linear rule)."""
  v = np.asarray(values, np.float64).reshape(-1)
  if v.shape[0] < 1 or not np.all(np.isfinite(v)):
    raise ValueError("klom_summary needs at least one finite value")
  return {"mean": float(np.mean(v)), "p95": float(np.percentile(v, 95))}
