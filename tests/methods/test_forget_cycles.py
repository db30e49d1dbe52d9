"""``forget_cycles`` (``docs/algorithms.md`` §6.18): what makes the method that method."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.methods.support import flat, run
from unlearn_jax.models import get_model
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import ModelState, forget_cycles


def test_forget_cycles_variant_tables():
  cycles, lrs = forget_cycles.variant_tables("A")
  assert cycles == (1, 2, 2) and lrs == pytest.approx((1e-3, 1e-3, 5e-4, 1e-3, 5e-4))
  assert forget_cycles.variant_tables("B") == ((2, 1, 1, 1), (5e-4, 1e-3, 1e-3, 1e-3, 1e-3))


def test_forget_cycles_pool_excludes_fc_and_projections(resnet_params):
  pool = forget_cycles.layer_pool(resnet_params)
  assert len(pool) == 17 and "conv1" in pool and "fc" not in pool
  assert not any("downsample" in m for m in pool)


def test_forget_cycles_reinitialises_exactly_the_chosen_layers(data):
  cnn = get_model("cnn", 10, conv_impl="gemm")
  params, stats = init_variables(cnn, jax.random.key(0), data.image_shape)
  state = ModelState(params, stats)
  method = forget_cycles.make(cnn, n_layers=1, cycle_epochs=(1,), lrs=(0.0,))
  chosen = []
  for seed in range(1, 6):
    result = run(method, state, data, seed)
    gates = np.asarray(result.metrics["reinit_gates"])
    assert gates.shape == (1, 2) and gates.sum() == 1
    got, orig = flat(result.state.params), flat(params)
    for j, layer in enumerate(("conv1", "conv2")):
      same = np.array_equal(got[f"{layer}/kernel"], orig[f"{layer}/kernel"])
      assert same == (gates[0, j] == 0)
    for n in ("bn1/scale", "bn2/bias", "head/kernel"):
      np.testing.assert_array_equal(got[n], orig[n])
    chosen.append(int(gates[0].argmax()))
  assert len(set(chosen)) == 2


def test_forget_cycles_distils_with_mse_to_teacher(tiny, trained, data):
  result = run(forget_cycles.make(tiny, cycle_epochs=(1, 2), lrs=(1e-2, 1e-2, 1e-2)), trained, data)
  losses = np.asarray(result.metrics["loss"])
  assert losses.shape == (3,) and np.all(np.isfinite(losses)) and losses[0] > 0
