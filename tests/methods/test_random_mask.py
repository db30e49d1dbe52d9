"""``random_mask`` (``docs/algorithms.md`` §6.19): what makes the method that method."""

from __future__ import annotations

import numpy as np

from tests.methods.support import flat, run
from unlearn_jax.unlearning import random_mask


def test_random_mask_zeroes_half_of_non_bn_tensors(tiny, trained, data):
  result = run(random_mask.make(tiny, epochs=0), trained, data)
  got, orig = flat(result.state.params), flat(trained.params)
  zeroed = np.concatenate([(got[n] == 0).reshape(-1) for n in ("conv1/kernel", "head/kernel", "head/bias")])
  assert 0.38 < zeroed.mean() < 0.62  # 162 Bernoulli(0.5) draws
  for n in ("conv1/kernel", "head/kernel", "head/bias"):
    keep = got[n] != 0
    np.testing.assert_array_equal(got[n][keep], orig[n][keep])
  for n in ("bn1/scale", "bn1/bias"):
    np.testing.assert_array_equal(got[n], orig[n])
  other = flat(run(random_mask.make(tiny, epochs=0), trained, data, seed=2).state.params)
  assert not np.array_equal(other["head/kernel"] == 0, got["head/kernel"] == 0)
