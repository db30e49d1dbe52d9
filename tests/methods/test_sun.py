"""``sun`` (``docs/algorithms.md`` §6.17): what makes the method that method."""

from __future__ import annotations

import math

import jax
import numpy as np

from tests.methods.support import flat, run
from unlearn_jax.unlearning import random_mask, sun


def test_sun_pool_follows_torch_names_on_resnet(resnet_params):
  pool = flat(random_mask.pool_mask(resnet_params, "torch_name"))
  assert pool["layer2_0/downsample_bn/scale"] and pool["fc/bias"] and pool["layer1_0/conv2/kernel"]
  assert not pool["layer1_0/bn1/scale"] and not pool["bn1/bias"]
  assert sum(pool.values()) == 20 + 2 + 6
  assert not flat(random_mask.pool_mask(resnet_params, "no_bn"))["layer2_0/downsample_bn/scale"]


def test_sun_epoch0_trains_only_picked_tensors_and_bn_and_resets_fc(tiny, trained, data):
  frozen = run(sun.make(tiny, lrs=(0.0,), k=1), trained, data)
  moved = run(sun.make(tiny, lrs=(5e-2,), k=1), trained, data)
  pool = ["conv1/kernel", "head/bias", "head/kernel"]  # tree order
  picked = np.asarray(moved.metrics["picked"])
  assert picked.shape == (1, 3) and picked.sum() == 1
  assert np.asarray(moved.metrics["noised"]).sum() == 0
  z, m, o = flat(frozen.state.params), flat(moved.state.params), flat(trained.params)
  for n in ("head/kernel", "head/bias"):  # reset with torch's default init
    assert not np.any(z[n] == o[n]) and (np.abs(z[n]) <= 1 / math.sqrt(8)).all()
  np.testing.assert_array_equal(z["conv1/kernel"], o["conv1/kernel"])
  for j, n in enumerate(pool):
    if picked[0, j]:
      assert not np.array_equal(m[n], z[n])
    else:
      np.testing.assert_array_equal(m[n], z[n])
  for n in ("bn1/scale", "bn1/bias"):
    assert not np.array_equal(m[n], o[n])


def test_sun_noises_only_fresh_picks_and_later_trains_everything_under_vmap(tiny, trained, data):
  method = sun.make(tiny, lrs=(1e-3,) * 4, select_epochs=3, k=2, noise_fraction=0.7)
  keys = jax.random.split(jax.random.key(5), 4)
  out = jax.jit(jax.vmap(method.unlearn, in_axes=(None, None, 0)))(trained, data, keys)
  assert out.state.params["head"]["kernel"].shape == (4, 8, 10)
  picks = []
  for picked, noised in zip(np.asarray(out.metrics["picked"]), np.asarray(out.metrics["noised"])):
    assert (picked[:3].sum(1) == 2).all() and (picked[3] == 1).all()
    assert noised[0].sum() == 0 and (noised.sum(1) <= 1).all()
    for e in range(1, 3):
      assert not np.any(noised[e] * picked[:e].max(0))
      assert not np.any(noised[e] * (1 - picked[e]))
    picks.append(picked[:3].tobytes())
  assert len(set(picks)) > 1
