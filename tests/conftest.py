"""Shared pytest fixtures.

Strictness: pyproject turns warnings into errors. JAX's
``jax_numpy_rank_promotion="raise"`` is not switched on here: Flax and Optax
pass with it, but the library's torch-semantics ``BatchNorm``
(``models/layers.py``) still broadcasts ``[C]`` statistics against
``[N, H, W, C]`` activations implicitly.
"""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def key() -> jax.Array:
  """A fixed PRNG key, so every test draws the same numbers on every run."""
  return jax.random.key(0)
