"""Models: torchvision-exact ResNet-18 layout, torch BatchNorm, conv lowerings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.models import BatchNorm, Conv, get_model
from unlearn_jax.models.layers import max_pool_torch


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_resnet18_matches_torchvision_parameter_count_and_shapes():
  # Abstract evaluation only (jax.eval_shape): the shapes are those of a real init and forward pass.
  model = get_model("resnet18", 10)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert _count(variables["params"]) == 11_181_642  # torchvision resnet18(num_classes=10)
  p = variables["params"]
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert p["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 128)
  assert p["fc"]["kernel"].shape == (512, 10)
  # Feature-map sizes 16 -> 8 -> 8, 4, 2, 1 on 32x32 input.
  _, inter = jax.eval_shape(lambda v, x: model.apply(v, x, capture_intermediates=True), variables, x)
  shapes = {k: v["__call__"][0].shape for k, v in inter["intermediates"].items() if k.startswith("layer")}
  assert shapes["layer1_1"][1:3] == (8, 8)
  assert shapes["layer2_1"][1:3] == (4, 4)
  assert shapes["layer3_1"][1:3] == (2, 2)
  assert shapes["layer4_1"][1:3] == (1, 1)


def test_torch_init_statistics():
  model = get_model("resnet18", 10)
  p = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))["params"]
  k = np.asarray(p["layer3_0"]["conv1"]["kernel"])  # (3,3,128,256): fan_out = 3*3*256
  assert abs(k.std() - np.sqrt(2.0 / (9 * 256))) < 0.02 * np.sqrt(2.0 / (9 * 256))
  assert abs(k.mean()) < 1e-3
  fc = np.asarray(p["fc"]["kernel"])  # U(±1/sqrt(512))
  assert np.abs(fc).max() <= 1 / np.sqrt(512) + 1e-7
  assert np.abs(fc).max() > 0.9 / np.sqrt(512)
  assert (np.asarray(p["bn1"]["scale"]) == 1).all() and (np.asarray(p["bn1"]["bias"]) == 0).all()


def test_max_pool_matches_naive_torch_semantics():
  x = jax.random.normal(jax.random.key(2), (1, 5, 5, 2))
  out = np.asarray(max_pool_torch(x))
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ref = np.empty((1, 3, 3, 2))
  for i in range(3):
    for j in range(3):
      ref[0, i, j] = xp[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(0, 1))
  np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("stride,pad,k", [(1, 1, 3), (2, 3, 7), (2, 0, 1)])
def test_gemm_conv_equals_xla_conv_and_naive(stride, pad, k):
  x = jax.random.normal(jax.random.key(3), (2, 9, 9, 3))
  xla = Conv(4, (k, k), (stride, stride), ((pad, pad), (pad, pad)), impl="xla")
  gemm = Conv(4, (k, k), (stride, stride), ((pad, pad), (pad, pad)), impl="gemm")
  v = xla.init(jax.random.key(4), x)
  a, b = np.asarray(xla.apply(v, x)), np.asarray(gemm.apply(v, x))
  # Naive cross-correlation (torch conv semantics).
  xp = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  w = np.asarray(v["params"]["kernel"])
  out = (9 + 2 * pad - k) // stride + 1
  ref = np.zeros((2, out, out, 4))
  for i in range(out):
    for j in range(out):
      patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
      ref[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w)
  np.testing.assert_allclose(a, ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(b, ref, rtol=1e-4, atol=1e-4)


def test_batchnorm_torch_semantics():
  x = jax.random.normal(jax.random.key(5), (4, 3, 3, 2)) * 2 + 1
  bn = BatchNorm()
  v = bn.init(jax.random.key(0), x, train=False)
  y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
  xn = np.asarray(x).reshape(-1, 2)
  mean, var_b, var_u = xn.mean(0), xn.var(0), xn.var(0, ddof=1)
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 2), (xn - mean) / np.sqrt(var_b + 1e-5), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var_u, rtol=1e-5)
  # Eval mode uses the running statistics.
  v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
  y_eval = bn.apply(v2, x, train=False)
  rm, rv = np.asarray(upd["batch_stats"]["mean"]), np.asarray(upd["batch_stats"]["var"])
  np.testing.assert_allclose(np.asarray(y_eval).reshape(-1, 2), (xn - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)


def test_unknown_model_is_rejected():
  with pytest.raises(ValueError, match="unknown model 'vgg'"):
    get_model("vgg", 10)
