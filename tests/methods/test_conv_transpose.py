"""``conv_transpose`` (``docs/algorithms.md`` §6.15): what makes the method that method."""

from __future__ import annotations

import numpy as np

from tests.methods.support import flat, run
from unlearn_jax.training import steps
from unlearn_jax.unlearning import conv_transpose


def test_conv_transpose_swaps_kernel_axes_and_is_transposition_equivariant(tiny, trained, data):
  result = run(conv_transpose.make(tiny, epochs=0), trained, data)
  got, orig = flat(result.state.params), flat(trained.params)
  np.testing.assert_array_equal(got["conv1/kernel"], orig["conv1/kernel"].transpose(1, 0, 2, 3))
  for name in ("bn1/scale", "bn1/bias", "head/kernel", "head/bias"):
    np.testing.assert_array_equal(got[name], orig[name])
  # tiny_cnn is symmetric in H/W, so transposed kernels on transposed images give the original outputs.
  x, _ = data.gather(data.retain[:8])
  before = steps.apply_eval(tiny, trained.params, trained.batch_stats, x)
  after = steps.apply_eval(tiny, result.state.params, result.state.batch_stats, x.transpose(0, 2, 1, 3))
  np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)
  assert not np.allclose(steps.apply_eval(tiny, result.state.params, result.state.batch_stats, x), before)


def test_conv_transpose_fine_tunes_on_retain(tiny, trained, data):
  result = run(conv_transpose.make(tiny, epochs=1, lr=1e-2), trained, data)
  assert result.metrics["loss"].shape == (1,)
  moved = flat(result.state.params)["conv1/kernel"] - flat(trained.params)["conv1/kernel"].transpose(1, 0, 2, 3)
  assert np.abs(moved).max() > 0
