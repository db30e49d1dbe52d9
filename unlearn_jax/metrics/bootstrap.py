"""Bootstrap uncertainty of the forgetting quality (``shared/spec/evaluations.md`` section 1).

* :func:`model_bootstrap` resamples the N unlearned and, independently, the N retrained
  models with replacement and recomputes every per-example epsilon and F for each draw.
  All ``B x E`` (draw, example) pairs go through the competition kernel of
  :mod:`unlearn_jax.metrics.privacy` as one jitted computation: a ``lax.map`` over
  fixed-size batches of pairs (memory bounded by the batch), each pair gathering its
  resampled columns on the device. Resampling duplicates values; the kernel counts
  ties exactly, so each draw equals the plain metric on the explicitly resampled arrays
  bit for bit.
* :func:`example_bootstrap` resamples forget examples, reusing each example's points.
* :func:`interval` is the percentile interval of either.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.metrics import privacy

DEFAULT_DRAWS = 200
PAIR_BATCH = 8


@dataclasses.dataclass(frozen=True)
class ModelBootstrap:
  """B model-bootstrap draws of the forgetting quality.

  Attributes:
    forgetting_quality: ``[B]`` float64 F of each draw.
    unlearned_idx: ``[B, N]`` int64 model indices of each draw's unlearned population
      (``unlearned_confs[unlearned_idx[b]]`` is draw b's resampled array).
    retrained_idx: ``[B, N]`` int64 the same for the retrained population.
  """
  forgetting_quality: np.ndarray
  unlearned_idx: np.ndarray
  retrained_idx: np.ndarray


def _positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


@functools.partial(jax.jit, static_argnames=("search_steps", "batch"))
def _draw_epsilons(u_t, r_t, unlearned_idx, retrained_idx, pair_example, pair_draw, table, *,
                   search_steps: int, batch: int):
  """``[P]`` float32 epsilon of each (example, draw) pair; ``u_t``, ``r_t`` are ``[E, N]`` float64."""

  def one(pair):
    e, b = pair
    out = privacy._example(u_t[e][unlearned_idx[b]], r_t[e][retrained_idx[b]], table, search_steps=search_steps,
                           occupancy_pad=1, count_method="lattice")
    return out["epsilon"], out["ok"]

  return jax.lax.map(one, (pair_example, pair_draw), batch_size=batch)


def _draw_all(u: np.ndarray, r: np.ndarray, unlearned_idx: np.ndarray, retrained_idx: np.ndarray,
              batch: int = PAIR_BATCH) -> np.ndarray:
  """``[B, E]`` float64 epsilons of every draw (``u``, ``r`` checked ``[N, E]`` float64)."""
  n, e = u.shape
  b = unlearned_idx.shape[0]
  pairs = e * b
  padded = -(-pairs // batch) * batch
  flat = np.arange(padded) % pairs  # the padding repeats real pairs; it is sliced away
  with jax.enable_x64(True):
    eps, ok = _draw_epsilons(jnp.asarray(u.T), jnp.asarray(r.T), jnp.asarray(unlearned_idx, jnp.int32),
                             jnp.asarray(retrained_idx, jnp.int32), jnp.asarray(flat // b, jnp.int32),
                             jnp.asarray(flat % b, jnp.int32), jnp.asarray(privacy.epsilon_table(n)),
                             search_steps=privacy.search_steps(u, r), batch=batch)
    eps, ok = np.asarray(eps)[:pairs], np.asarray(ok)[:pairs]
  if not ok.all():
    raise RuntimeError("internal grid-size bound violated; please report with the inputs")
  return eps.astype(np.float64).reshape(e, b).T


def model_bootstrap(unlearned_confs: Any, retrained_confs: Any, num_draws: int = DEFAULT_DRAWS,
                    seed: int = 0) -> ModelBootstrap:
  """F of ``num_draws`` model-bootstrap resamples of both populations.

  Each draw takes N model indices with replacement for the unlearned population and,
  independently, N for the retrained one (``np.random.default_rng(seed)``: all unlearned
  index rows first, then all retrained ones), and recomputes every per-example epsilon
  and F exactly as :func:`unlearn_jax.metrics.forgetting_quality` would on
  ``unlearned_confs[unlearned_idx[b]]`` and ``retrained_confs[retrained_idx[b]]``.

  Args:
    unlearned_confs: ``[N, E]`` logit-scaled confidences of N unlearned models.
    retrained_confs: ``[N, E]`` the same for N retrained models.
    num_draws: B, the number of draws.
    seed: seed of the index draws.

  Returns:
    A :class:`ModelBootstrap`.

  >>> import numpy as np
  >>> u = np.zeros((8, 3)) + 1.0  # collapsed unlearned models: every example peaky, F = 0
  >>> model_bootstrap(u, np.random.default_rng(0).normal(size=(8, 3)), num_draws=4).forgetting_quality.tolist()
  [0.0, 0.0, 0.0, 0.0]
  """
  u, r = privacy._check_pair(unlearned_confs, retrained_confs)
  b = _positive_int("num_draws", num_draws)
  n = u.shape[0]
  rng = np.random.default_rng(seed)
  unlearned_idx = rng.integers(0, n, size=(b, n))
  retrained_idx = rng.integers(0, n, size=(b, n))
  eps = _draw_all(u, r, unlearned_idx, retrained_idx)
  quality = privacy.epsilon_points(eps, n).sum(axis=1) / eps.shape[1]
  return ModelBootstrap(forgetting_quality=quality, unlearned_idx=unlearned_idx, retrained_idx=retrained_idx)


def example_bootstrap(epsilons: Any, num_models: int, num_draws: int = DEFAULT_DRAWS, seed: int = 0) -> np.ndarray:
  """``[B]`` F of forget sets resampled with replacement, each example keeping its epsilon.

  Args:
    epsilons: ``[E]`` per-example epsilons (e.g. ``forgetting_metric(...).epsilons``).
    num_models: N, which fixes the score buckets.
    num_draws: B.
    seed: seed of the index draws (``np.random.default_rng(seed).integers(0, E, (B, E))``).
  """
  eps = np.asarray(epsilons, np.float64)
  if eps.ndim != 1 or eps.shape[0] < 1:
    raise ValueError(f"epsilons must have shape [num_examples] with at least one example, got shape {eps.shape}")
  if not np.all(np.isfinite(eps)):
    raise ValueError("epsilons must be finite")
  n = _positive_int("num_models", num_models)
  b = _positive_int("num_draws", num_draws)
  points = privacy.epsilon_points(eps, n)
  idx = np.random.default_rng(seed).integers(0, eps.shape[0], size=(b, eps.shape[0]))
  return points[idx].sum(axis=1) / eps.shape[0]


def interval(values: Any, level: float = 0.95) -> tuple[float, float]:
  """The central percentile interval of bootstrap values: (2.5th, 97.5th) percentiles at level 0.95.

  >>> interval(np.arange(101.0))
  (2.5, 97.5)
  """
  v = np.asarray(values, np.float64).reshape(-1)
  if v.shape[0] < 1 or not np.all(np.isfinite(v)):
    raise ValueError("interval needs at least one finite value")
  if not 0.0 < float(level) < 1.0:
    raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
  tail = round(50.0 * (1.0 - float(level)), 9)  # 2.5, not 2.5000000000000018
  lo, hi = np.percentile(v, [tail, 100.0 - tail])
  return float(lo), float(hi)
