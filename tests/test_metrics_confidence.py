"""Logit-scaled confidence against the spec's checks and the NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.reference import reference_confidence
from unlearn_jax.metrics import logit_scaled_confidence


def test_spec_values():
  assert float(logit_scaled_confidence(jnp.array([2.0, 1.0, 0.0]), jnp.array(0))) == pytest.approx(0.686738, abs=1e-6)
  assert float(logit_scaled_confidence(jnp.array([200.0, 0.0, 0.0]), jnp.array(0))) == pytest.approx(103.616329, abs=1e-4)
  assert float(logit_scaled_confidence(jnp.array([0.0, 200.0, 0.0]), jnp.array(0))) == pytest.approx(-103.616329, abs=1e-4)


def test_matches_reference_away_from_float32_underflow():
  rng = np.random.default_rng(0)
  z = (rng.normal(size=(2000, 10)) * rng.uniform(0, 30, size=(2000, 1))).astype(np.float32)
  y = rng.integers(0, 10, size=2000)
  got = np.asarray(logit_scaled_confidence(z, y))
  want = reference_confidence(z, y)
  keep = np.abs(want) < 80  # beyond ~87 the reference's float32 exp underflows term by term
  assert keep.sum() > 1500
  np.testing.assert_allclose(got[keep], want[keep], rtol=1e-5, atol=1e-5)
  assert got.dtype == np.float32
  assert np.all(np.abs(got) <= 103.61634)


def test_batched_shapes_and_jit_equals_eager():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 4, size=(5,)))
  jitted = logit_scaled_confidence(z, y[None, :])
  with jax.disable_jit():
    eager = logit_scaled_confidence(z, y[None, :])
  assert jitted.shape == (3, 5) and jitted.dtype == eager.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(jitted[1]), reference_confidence(np.asarray(z[1]), np.asarray(y)),
                             rtol=1e-5, atol=1e-5)
