"""Fixtures of the per-method tests: a small digits split and small models.

CPU-fast: ``tiny_mlp`` / ``tiny_cnn`` (gemm convolution) on a small digits subset
(64 retain / 16 forget / 16 validation), one or two epochs; ResNet-specific rules are
checked on ``resnet18`` parameter trees. Expected values in these tests are computed
independently (direct forwards, ``jax.grad`` of hand-written losses, Python loops),
not by the code under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from tests.helpers import small_digits
from unlearn_jax.models import get_model
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import ModelState


@pytest.fixture(scope="module")
def data():
  return small_digits()


@pytest.fixture(scope="module")
def mlp(data):
  model = get_model("tiny_mlp", data.num_classes)
  return model, ModelState(*init_variables(model, jax.random.key(11), data.image_shape))


@pytest.fixture(scope="module")
def cnn(data):
  model = get_model("tiny_cnn", data.num_classes, conv_impl="gemm")
  return model, ModelState(*init_variables(model, jax.random.key(12), data.image_shape))


@pytest.fixture(scope="module")
def tiny():
  return get_model("tiny_cnn", 10, conv_impl="gemm")


@pytest.fixture(scope="module")
def trained(tiny, data):
  """A tiny_cnn whose outputs are far from uniform (torch init, head scaled ×10) — an "original" model."""
  params, stats = init_variables(tiny, jax.random.key(0), data.image_shape)
  params = dict(params, head=dict(params["head"], kernel=params["head"]["kernel"] * 10.0))
  return ModelState(params, stats)


@pytest.fixture(scope="module")
def resnet_params():
  """resnet18's parameter tree (zeros of the right shapes: the structure is what the rules read)."""
  model = get_model("resnet18", 10)
  shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (8, 8, 1))[0])
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
