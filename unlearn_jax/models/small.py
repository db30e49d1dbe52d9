"""Small models for the embedded dataset and for tests: an MLP and a small CNN."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from unlearn_jax.models.layers import BatchNorm, Conv, Dense


class MLP(nn.Module):
  """Flatten, then ``hidden`` ReLU layers with torch init, then a linear head."""

  num_classes: int = 10
  hidden: Sequence[int] = (128, 128)
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(x))
    return Dense(self.num_classes, name="head")(x.astype(jnp.float32))


class SmallCNN(nn.Module):
  """Two 3×3 conv-BN-ReLU stages with 2×2 average pooling, then a linear head."""

  num_classes: int = 10
  widths: Sequence[int] = (32, 64)
  conv_impl: str = "xla"
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, width in enumerate(self.widths):
      x = Conv(width, (3, 3), padding=((1, 1), (1, 1)), impl=self.conv_impl, dtype=self.dtype,
               name=f"conv{i + 1}")(x)
      x = nn.relu(BatchNorm(dtype=self.dtype, name=f"bn{i + 1}")(x, train))
      if min(x.shape[1:3]) >= 2:
        x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.mean(axis=(1, 2))
    return Dense(self.num_classes, name="head")(x.astype(jnp.float32))
