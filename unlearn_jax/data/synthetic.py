"""Synthetic data of real datasets' shapes, for timing and memory without the data.

:data:`SYNTHETIC` names the generators a config's ``dataset`` may use beside the
registered sources (:data:`unlearn_jax.data.SOURCES`); :func:`load_data` loads either.
Labels are random, so accuracies sit near chance: use these to measure throughput and
memory of the full-size protocol (configs, the strategy tuner, benchmarks), never to
judge a method.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from unlearn_jax.data.dataset import Dataset
from unlearn_jax.data.sources import load_dataset


def random_cifar10(data_dir: Optional[str] = None, num_train: int = 50_000, num_test: int = 10_000) -> Dataset:
  """Random uint8 images of CIFAR-10's shape (32x32x3, 10 classes, 50k/10k), fixed seed."""
  del data_dir
  rng = np.random.default_rng(1234)
  m = num_train + num_test
  return Dataset(name="random_cifar10", images=rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, m).astype(np.int32), groups=np.full(m, -1, np.int32), num_classes=10,
                 train_idx=np.arange(num_train), test_idx=np.arange(num_train, m), scale=1.0 / 255.0,
                 mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


SYNTHETIC: dict[str, Callable[[Optional[str]], Dataset]] = {"random_cifar10": random_cifar10}


def load_data(name: str, data_dir: Optional[str] = None) -> Dataset:
  """A registered source (:func:`unlearn_jax.data.load_dataset`) or a synthetic one from :data:`SYNTHETIC`."""
  if name in SYNTHETIC:
    return SYNTHETIC[name](data_dir)
  return load_dataset(name, data_dir)
