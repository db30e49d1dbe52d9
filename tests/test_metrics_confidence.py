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


def test_matches_reference_over_the_whole_range():
  rng = np.random.default_rng(0)
  z = (rng.normal(size=(4000, 10)) * rng.uniform(0, 40, size=(4000, 1))).astype(np.float32)
  y = rng.integers(0, 10, size=4000)
  got = np.asarray(logit_scaled_confidence(z, y))
  want = reference_confidence(z, y)
  assert got.dtype == np.float32
  assert np.sum(np.abs(want) > 87) > 200  # the subnormal regime is exercised
  assert np.sum(np.abs(want) > 103.6) > 100  # and the saturation
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=5e-5)


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
