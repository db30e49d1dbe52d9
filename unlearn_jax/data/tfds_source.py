"""Image-classification datasets read through tensorflow-datasets, without TensorFlow.

``tfds`` can read a prepared dataset by random access
(``DatasetBuilder.as_data_source``) from ``array_record`` files, which needs
no TensorFlow. Preparing (downloading and converting) a dataset does need
TensorFlow and the network, so this module never prepares anything: the data
must already be under ``data_dir`` (default: tfds' own, ``~/tensorflow_datasets``
or ``$TFDS_DATA_DIR``), e.g. from ``--download`` (:mod:`unlearn_jax.data.download`)
or ``tfds build cifar10 --file_format=array_record`` run on a machine that has TensorFlow.

The tfds ``train`` split becomes the training pool and ``test`` the held-out
pool (split into validation/test by :class:`~unlearn_jax.data.SplitSpec`).
Pixels stay uint8; ``scale=1/255`` and the per-channel mean/std below are
applied after the on-device gather. The CIFAR-10 statistics are the starting
kit's (``unlearning-challenge/starting-kit``, ``unlearning-CIFAR10.ipynb``);
the others are the customary per-channel statistics of each training set.
For a dataset without an entry the statistics are computed from its training
images.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Optional

import numpy as np

from unlearn_jax.data.cifar_tarball import CIFAR10_MEAN, CIFAR10_STD
from unlearn_jax.data.dataset import Dataset

# name -> (mean, std) of pixels scaled to [0, 1].
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
  """Holds back tfds' absl warnings (e.g. "Variant folder ... has no dataset_info.json" for an
  unprepared folder), so that a missing dataset reads as our one-line error alone."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _read_split(source, name: str, split: str, image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
  """All ``(images, labels)`` of one random-access split, in index order."""
  n = len(source)
  if n == 0:
    raise ValueError(f"tfds dataset {name!r} split {split!r} is empty")
  first = source[0]
  for key in (image_key, label_key):
    if key not in first:
      raise ValueError(f"tfds dataset {name!r} has no feature {key!r}; features are {sorted(first)}")
  image0 = np.asarray(first[image_key])
  if image0.ndim != 3:
    raise ValueError(f"tfds dataset {name!r} feature {image_key!r} must be [H, W, C] images, got shape {image0.shape}")
  images = np.empty((n,) + image0.shape, image0.dtype)
  labels = np.empty((n,), np.int64)
  for i in range(n):
    example = first if i == 0 else source[i]
    images[i] = example[image_key]
    labels[i] = example[label_key]
  return images, labels


def load_tfds(
    name: str,
    data_dir: Optional[str] = None,
    *,
    train_split: str = "train",
    test_split: str = "test",
    image_key: str = "image",
    label_key: str = "label",
) -> Dataset:
  """Loads tfds image-classification dataset ``name`` from ``data_dir``.

  Args:
    name: tfds name, optionally with config/version (``"cifar10"``, ``"mnist:3.0.1"``).
    data_dir: tfds data directory; ``None`` uses tfds' default.
    train_split, test_split: tfds split names of the training and held-out pools.
    image_key, label_key: feature names of the image and of the integer class label.

  Returns:
    A :class:`Dataset` whose ``train_idx`` is ``train_split`` and ``test_idx``
    is ``test_split``; ``groups`` are all ``-1``.

  Raises:
    FileNotFoundError: ``data_dir`` does not exist, or the dataset is not
      prepared there in ``array_record`` format.
    ValueError: unknown tfds name, or features that are not images/labels.
  """
  import tensorflow_datasets as tfds  # deferred: importing tfds costs ~0.4 s

  if data_dir is not None and not os.path.isdir(data_dir):
    raise FileNotFoundError(f"tfds data_dir {data_dir!r} does not exist")
  try:
    with quiet_tfds():
      builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"unknown tfds dataset {name!r}") from e
  features = builder.info.features
  if label_key in features and hasattr(features[label_key], "num_classes"):
    num_classes = int(features[label_key].num_classes)
  else:
    raise ValueError(f"tfds dataset {name!r} has no class-label feature {label_key!r}")

  parts = []
  for split in (train_split, test_split):
    try:
      source = builder.as_data_source(split=split)
    except (KeyError, NotImplementedError) as e:
      raise FileNotFoundError(
          f"tfds dataset {name!r} split {split!r} is not prepared in array_record format under "
          f"{builder.data_dir!r}; prepare it first: the same command with --download on a machine with "
          f"internet, or tensorflow-datasets with file_format='array_record' (this loader never downloads)") from e
    parts.append(_read_split(source, name, split, image_key, label_key))

  (train_x, train_y), (test_x, test_y) = parts
  if train_x.shape[1:] != test_x.shape[1:]:
    raise ValueError(f"tfds dataset {name!r}: train images {train_x.shape[1:]} and test images "
                     f"{test_x.shape[1:]} differ in shape")
  images = np.concatenate([train_x, test_x])
  n_train, m = len(train_x), len(train_x) + len(test_x)
  channels = images.shape[-1]
  base = name.split(":")[0].split("/")[0]
  if base in NORMALISATION:
    mean, std = NORMALISATION[base]
  else:
    pixels = train_x.reshape(-1, channels).astype(np.float64) / 255.0
    mean, std = tuple(pixels.mean(0).tolist()), tuple(np.maximum(pixels.std(0), 1e-6).tolist())
  if len(mean) != channels:
    raise ValueError(f"tfds dataset {name!r} has {channels} channels but its statistics have {len(mean)}")
  return Dataset(
      name=base,
      images=images,
      labels=np.concatenate([train_y, test_y]).astype(np.int32),
      groups=np.full(m, -1, np.int32),
      num_classes=num_classes,
      train_idx=np.arange(n_train),
      test_idx=np.arange(n_train, m),
      scale=1.0 / 255.0,
      mean=tuple(mean),
      std=tuple(std),
  )
