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


@pytest.fixture(autouse=True, scope="session")
def private_tune_file(tmp_path_factory):
  """Tuned choices go to a file of this test session, never to the user's ``~/.cache``.

  Set in the environment, so CLI subprocesses inherit it; tests that check the file
  itself still point ``UNLEARN_JAX_TUNE_FILE`` at their own ``tmp_path``.
  """
  patch = pytest.MonkeyPatch()
  patch.setenv("UNLEARN_JAX_TUNE_FILE", str(tmp_path_factory.mktemp("tune") / "strategies.json"))
  yield
  patch.undo()
