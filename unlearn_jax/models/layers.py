"""Layers with PyTorch semantics: explicit paddings, torch initialisers, torch BatchNorm.

Every module here keeps its state per instance and never names a collective
axis, so a ``vmap`` over seeds gives each seed its own BatchNorm statistics.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# torchvision's conv init: kaiming_normal(mode='fan_out', nonlinearity='relu'), untruncated.
torch_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's default Conv/Linear weight init: kaiming_uniform(a=sqrt(5)) == U(±1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

CONV_IMPLS = ("xla", "gemm")


def torch_bias_init(fan_in: int):
  """torch's default bias init U(±1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nn.Module):
  """BatchNorm with torch semantics.

  Normalises with the biased batch variance in training, like both torch and
  Flax, but updates the running variance with the *unbiased* one (× n/(n-1)),
  as torch does. ``momentum`` is the EMA decay (torch momentum 0.1 == 0.9).
  Parameters ``scale``/``bias``; statistics ``mean``/``var`` in
  ``batch_stats``. No ``axis_name``: statistics never mix across a vmap.
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if train:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      mean = xf.mean(axes)
      var = jnp.square(xf - mean).mean(axes)
      n = math.prod(x.shape[a] for a in axes)
      if not self.is_initializing():
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * unbiased
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = lax.rsqrt(var + self.epsilon) * scale
    y = (x - mean.astype(x.dtype)) * mul.astype(x.dtype) + bias.astype(x.dtype)
    return y.astype(self.dtype or x.dtype)


class Conv(nn.Module):
  """2-D convolution with explicit padding, NHWC, kernel ``(kh, kw, I, O)``.

  ``impl='xla'`` calls ``lax.conv_general_dilated``. ``impl='gemm'`` computes
  the same convolution as im2col patches times a matrix, so that a ``vmap``
  over seeds with per-seed kernels lowers to a batched matmul instead of a
  grouped convolution (which some backends run slowly).
  """

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  use_bias: bool = False
  kernel_init: nn.initializers.Initializer = torch_conv_init
  impl: str = "xla"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    cin = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features), jnp.float32)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    kernel = kernel.astype(dtype)
    if self.impl == "xla":
      y = lax.conv_general_dilated(
          x, kernel, self.strides, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    elif self.impl == "gemm":
      patches = lax.conv_general_dilated_patches(
          x, (kh, kw), self.strides, self.padding, dimension_numbers=("NHWC", "OIHW", "NHWC"))
      # Patch features are ordered (C, kh, kw); match that in the kernel matrix.
      mat = kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, self.features)
      y = patches @ mat
    else:
      raise ValueError(f"unknown conv impl {self.impl!r}; expected one of {CONV_IMPLS}")
    if self.use_bias:
      b = self.param("bias", torch_bias_init(cin * kh * kw), (self.features,), jnp.float32)
      y = y + b.astype(dtype)
    return y


class Dense(nn.Module):
  """Linear layer with torch's default initialisation (weight and bias U(±1/sqrt(fan_in)))."""

  features: int
  use_bias: bool = True
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_default_init, (fan_in, self.features), jnp.float32)
    dtype = self.dtype or x.dtype
    y = x.astype(dtype) @ kernel.astype(dtype)
    if self.use_bias:
      y = y + self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32).astype(dtype)
    return y


def max_pool_torch(x: jax.Array, window: int = 3, stride: int = 2, pad: int = 1) -> jax.Array:
  """torch ``MaxPool2d(window, stride, pad)`` on NHWC with -inf padding."""
  return lax.reduce_window(
      x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1),
      ((0, 0), (pad, pad), (pad, pad), (0, 0)))
