"""Data containers.

Two levels:

* :class:`Dataset` is the host-side NumPy form a *source* produces: every image
  once, its label and optional group id (e.g. a person id), and the source's own
  predefined partition (train / test, sometimes validation and forget).
* :class:`SplitData` is the device-resident form the engine uses: the same
  arrays plus the index sets ``retain``, ``forget``, ``validation`` and ``test``.
  Batches are gathered by index on device and normalised after the gather, so
  a dataset is copied to the accelerator once and never streamed per step.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Host-side dataset as a source loads it.

  Attributes:
    name: short identifier, e.g. ``"digits"`` or ``"cifar10"``.
    images: ``[M, H, W, C]`` raw pixels (uint8 or float32).
    labels: ``[M]`` int class ids in ``[0, num_classes)``.
    groups: ``[M]`` int group ids (``-1`` when the source has none).
    num_classes: number of classes.
    train_idx: indices of the training pool (retain + forget are drawn from it).
    test_idx: indices of held-out examples (validation/test are drawn from it
      when ``val_idx`` is ``None``).
    val_idx: optional source-defined validation indices.
    forget_idx: optional source-defined forget indices (a subset of train).
    scale: multiply raw pixels by this before normalising.
    mean, std: per-channel normalisation applied after ``scale``.
  """

  name: str
  images: np.ndarray
  labels: np.ndarray
  groups: np.ndarray
  num_classes: int
  train_idx: np.ndarray
  test_idx: np.ndarray
  val_idx: Optional[np.ndarray] = None
  forget_idx: Optional[np.ndarray] = None
  scale: float = 1.0
  mean: tuple[float, ...] = (0.0,)
  std: tuple[float, ...] = (1.0,)

  def __post_init__(self):
    m = len(self.images)
    if self.images.ndim != 4:
      raise ValueError(f"images must be [M, H, W, C], got shape {self.images.shape}")
    if self.labels.shape != (m,) or self.groups.shape != (m,):
      raise ValueError(
          f"labels and groups must have shape ({m},), got {self.labels.shape} and {self.groups.shape}")
    if m == 0:
      raise ValueError(f"dataset {self.name!r} has no images")
    if self.labels.min() < 0 or self.labels.max() >= self.num_classes:
      raise ValueError(
          f"labels must lie in [0, {self.num_classes}), got range [{self.labels.min()}, {self.labels.max()}]")

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])


@flax.struct.dataclass
class SplitData:
  """Device-resident dataset with its split index sets.

  ``train`` is ``retain`` followed by ``forget``. All index arrays are int32
  indices into ``images``/``labels``/``groups``.
  """

  images: jax.Array
  labels: jax.Array
  groups: jax.Array
  retain: jax.Array
  forget: jax.Array
  validation: jax.Array
  test: jax.Array
  mean: jax.Array
  std: jax.Array
  scale: float = flax.struct.field(pytree_node=False, default=1.0)
  num_classes: int = flax.struct.field(pytree_node=False, default=10)
  name: str = flax.struct.field(pytree_node=False, default="")

  @property
  def train(self) -> jax.Array:
    return jnp.concatenate([self.retain, self.forget])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def split(self, name: str) -> jax.Array:
    """Index array of split ``name`` (retain, forget, validation, test, train)."""
    if name == "train":
      return self.train
    if name not in ("retain", "forget", "validation", "test"):
      raise ValueError(f"unknown split {name!r}; expected retain, forget, validation, test or train")
    return getattr(self, name)

  def gather(self, indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Normalised float32 images and int32 labels at ``indices``."""
    x = self.images[indices].astype(jnp.float32) * self.scale
    channel = (1,) * (x.ndim - 1) + (-1,)  # explicit ranks: no implicit rank promotion
    x = (x - self.mean.reshape(channel)) / self.std.reshape(channel)
    return x, self.labels[indices]

  def class_counts(self, split: str = "train") -> jax.Array:
    """Per-class example counts of a split, as float32 ``[num_classes]``."""
    y = self.labels[self.split(split)]
    return jnp.zeros(self.num_classes, jnp.float32).at[y].add(1.0)


def to_device(
    dataset: Dataset,
    retain: np.ndarray,
    forget: np.ndarray,
    validation: np.ndarray,
    test: np.ndarray,
) -> SplitData:
  """Places ``dataset`` and its split indices on the default device."""
  as_idx = lambda a: jnp.asarray(np.asarray(a, dtype=np.int32))
  channels = dataset.images.shape[-1]
  mean = np.broadcast_to(np.asarray(dataset.mean, np.float32), (channels,))
  std = np.broadcast_to(np.asarray(dataset.std, np.float32), (channels,))
  return SplitData(
      images=jnp.asarray(dataset.images),
      labels=jnp.asarray(dataset.labels.astype(np.int32)),
      groups=jnp.asarray(dataset.groups.astype(np.int32)),
      retain=as_idx(retain),
      forget=as_idx(forget),
      validation=as_idx(validation),
      test=as_idx(test),
      mean=jnp.asarray(mean),
      std=jnp.asarray(std),
      scale=float(dataset.scale),
      num_classes=int(dataset.num_classes),
      name=dataset.name,
  )
