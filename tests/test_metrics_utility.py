"""Final score and accuracy helpers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.metrics import accuracy, final_score


def test_final_score_spec_example():
  assert final_score(0.1, 98, 99, 95, 96) == pytest.approx(0.097959, abs=1e-6)


def test_final_score_averages_per_model_arrays():
  got = final_score(0.5, [0.9, 0.7], [0.8, 0.8], np.array([0.6, 0.8]), [0.7])
  assert got == pytest.approx(0.5 * (0.8 / 0.8) * (0.7 / 0.7))
  assert final_score(0.2, [1.0], [0.5], [1.0], [1.0]) == pytest.approx(0.4)  # not capped at 1


def test_final_score_rejects_bad_accuracies():
  with pytest.raises(ValueError, match="retain_acc_retrained"):
    final_score(0.1, [0.9], [0.0], [0.9], [0.9])
  with pytest.raises(ValueError, match="test_acc_unlearned"):
    final_score(0.1, [0.9], [0.9], [], [0.9])


def test_accuracy_plain_and_masked():
  logits = jnp.array([[[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]]])  # [1 model, 4, 2]
  labels = jnp.array([0, 0, 0, 1])
  np.testing.assert_allclose(np.asarray(accuracy(logits, labels)), [0.75])
  mask = jnp.array([True, True, False, False])
  np.testing.assert_allclose(np.asarray(accuracy(logits, labels, mask)), [0.5])
