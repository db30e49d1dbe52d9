"""``oleszko`` (``docs/algorithms.md`` §6.14): what makes the method that method."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from tests.methods.support import flat, run
from unlearn_jax.unlearning import SetSizes, oleszko


def test_oleszko_keeps_exactly_1_percent_and_redraws_the_rest(tiny, trained, data):
  result = run(oleszko.make(tiny, num_steps=0, fp16=False), trained, data)
  got, orig = flat(result.state.params), flat(trained.params)
  names = ["conv1/kernel", "head/kernel", "head/bias"]
  total = sum(orig[n].size for n in names)
  n_keep = total - int(round(0.99 * total))
  kept = {n: got[n] == orig[n] for n in names}
  assert sum(int(k.sum()) for k in kept.values()) == n_keep
  mags = np.concatenate([np.abs(orig[n]).reshape(-1) for n in names])
  threshold = np.sort(mags)[-n_keep]
  for n in names:
    assert (np.abs(orig[n][kept[n]]) >= threshold).all()
  np.testing.assert_array_equal(got["head/bias"][~kept["head/bias"]], 0.0)
  for n, fan in (("conv1/kernel", 9), ("head/kernel", 8)):
    assert (np.abs(got[n][~kept[n]]) <= 1 / math.sqrt(fan)).all()
  for n in ("bn1/scale", "bn1/bias"):
    np.testing.assert_array_equal(got[n], orig[n])
  other = flat(run(oleszko.make(tiny, num_steps=0, fp16=False), trained, data, seed=2).state.params)
  assert not np.array_equal(other["head/kernel"], got["head/kernel"])


def test_oleszko_rounds_through_fp16_and_stops_mid_epoch(tiny, trained, data):
  method = oleszko.make(tiny, batch_size=10)  # 7 batches per epoch: ⌊3.2·7⌋ = 22 steps = 3 epochs + 1 step
  result = run(method, trained, data)
  assert result.metrics["loss"].shape == (4,)
  for tree in (result.state.params, result.state.batch_stats):
    for x in jax.tree.leaves(tree):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(x).astype(np.float16).astype(np.float32))
  assert method.cost(SetSizes(retain=64, forget=16, validation=16)) == pytest.approx(22 / 7 * 4 / 3)
