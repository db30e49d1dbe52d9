"""ResNet-18: torchvision-faithful (the competition's network) and CIFAR-style.

``ResNet18`` reproduces ``torchvision.models.resnet18(num_classes=10)``
exactly: a 7×7 stride-2 stem with padding 3, a 3×3 stride-2 max-pool with
padding 1, explicit paddings everywhere, torch initialisation and torch
BatchNorm. On 32×32 inputs the feature maps are 16, 8, 8, 4, 2, 1. It has
11,181,642 parameters for 10 classes. ``cifar_stem=True`` swaps the stem for
the 3×3 stride-1 convolution without max-pool that CIFAR ports use.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from unlearn_jax.models.layers import BatchNorm, Conv, Dense, max_pool_torch


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  conv_impl: str = "xla"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = lambda f, k, s, p, name: Conv(
        f, (k, k), (s, s), ((p, p), (p, p)), impl=self.conv_impl, dtype=self.dtype, name=name)
    bn = lambda name: BatchNorm(dtype=self.dtype, name=name)
    residual = x
    y = conv(self.features, 3, self.strides, 1, "conv1")(x)
    y = nn.relu(bn("bn1")(y, train))
    y = conv(self.features, 3, 1, 1, "conv2")(y)
    y = bn("bn2")(y, train)
    if self.strides != 1 or x.shape[-1] != self.features:
      residual = conv(self.features, 1, self.strides, 0, "downsample_conv")(x)
      residual = bn("downsample_bn")(residual, train)
    return nn.relu(y + residual)


class ResNet18(nn.Module):
  """ResNet-18 with torchvision's layout and initialisation.

  Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1_0``…,
  ``fc``), so a torch ``state_dict`` maps onto it name by name.
  """

  num_classes: int = 10
  cifar_stem: bool = False
  conv_impl: str = "xla"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.cifar_stem:
      x = Conv(64, (3, 3), (1, 1), ((1, 1), (1, 1)), impl=self.conv_impl, dtype=self.dtype, name="conv1")(x)
      x = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    else:
      x = Conv(64, (7, 7), (2, 2), ((3, 3), (3, 3)), impl=self.conv_impl, dtype=self.dtype, name="conv1")(x)
      x = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(x, train))
      x = max_pool_torch(x)
    for stage, features in enumerate((64, 128, 256, 512)):
      for block in range(2):
        strides = 2 if (stage > 0 and block == 0) else 1
        x = BasicBlock(features, strides, self.conv_impl, self.dtype, name=f"layer{stage + 1}_{block}")(x, train)
    x = x.mean(axis=(1, 2))
    return Dense(self.num_classes, name="fc")(x.astype(jnp.float32))
