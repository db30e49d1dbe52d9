"""``seif`` (``docs/algorithms.md`` §6.13): what makes the method that method."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.methods.support import flat, run
from unlearn_jax.training import steps
from unlearn_jax.unlearning import seif


def test_seif_noise_hits_the_resnet_stem_only_with_std_0_6(resnet_params):
  mask = flat(seif.noise_mask(resnet_params, "stem"))
  assert [n for n, m in mask.items() if m] == ["conv1/kernel"]
  everywhere = flat(seif.noise_mask(resnet_params, "all"))
  assert sum(everywhere.values()) == 20 and everywhere["layer2_0/downsample_conv/kernel"]
  noisy = flat(seif.add_noise(resnet_params, seif.noise_mask(resnet_params, "stem"), jax.random.key(3), 0.6))
  base = flat(resnet_params)
  diff = noisy["conv1/kernel"] - base["conv1/kernel"]
  assert diff.std() == pytest.approx(0.6, rel=0.05) and abs(diff.mean()) < 0.05
  for name in base:
    if name != "conv1/kernel":
      np.testing.assert_array_equal(noisy[name], base[name])


def test_seif_loss_is_ce_times_mean_class_weight_and_noise_is_stem_only(tiny, trained, data):
  # lr 0 and one full-batch epoch: both noise draws land before it and nothing moves afterwards, so
  # the recorded loss is the weighted CE at the returned parameters.
  method = seif.make(tiny, epochs=1, lr=0.0, batch_size=128)
  result = run(method, trained, data)
  got, orig = flat(result.state.params), flat(trained.params)
  x, y = data.gather(data.retain)
  logits, _ = steps.apply_train(tiny, result.state.params, trained.batch_stats, x)
  ce = -np.mean(np.asarray(jax.nn.log_softmax(logits))[np.arange(y.shape[0]), np.asarray(y)])
  w = np.where(np.asarray(y) == 0, 1.0, 0.05).mean()
  np.testing.assert_allclose(result.metrics["loss"], [ce * w], rtol=1e-5)
  noise = got["conv1/kernel"] - orig["conv1/kernel"]
  assert 0.4 < noise.std() < 0.8  # σ₁ = 0.6 (and σ₂ = 0.005) over 72 entries
  for name in ("head/kernel", "head/bias", "bn1/scale", "bn1/bias"):
    np.testing.assert_array_equal(got[name], orig[name])
  other = flat(run(method, trained, data, seed=2).state.params)
  assert not np.array_equal(other["conv1/kernel"], got["conv1/kernel"])
