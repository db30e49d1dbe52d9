"""Data sources: load a dataset into a host-side :class:`Dataset`.

The registry ``SOURCES`` maps a dataset name to a loader
``fn(data_dir: str | None) -> Dataset``. ``digits`` is embedded (it ships with
scikit-learn) and needs no network or files.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from unlearn_jax.data.dataset import Dataset


def load_digits(data_dir: Optional[str] = None) -> Dataset:
  """scikit-learn's bundled handwritten digits: 1,797 8×8 grey images, 10 classes.

  Real scanned digits that install with scikit-learn, so the default pipeline
  runs offline. A fixed permutation (seed 0) holds out 20% as the pool that
  validation and test are drawn from; the rest is the training pool.
  """
  del data_dir
  from sklearn.datasets import load_digits as _sk_load_digits

  bunch = _sk_load_digits()
  images = np.asarray(bunch.images, np.uint8)[..., None]  # values 0..16
  labels = np.asarray(bunch.target, np.int32)
  perm = np.random.default_rng(0).permutation(len(labels))
  n_held = len(labels) // 5
  return Dataset(
      name="digits",
      images=images,
      labels=labels,
      groups=np.full(len(labels), -1, np.int32),
      num_classes=10,
      train_idx=np.sort(perm[n_held:]),
      test_idx=np.sort(perm[:n_held]),
      scale=1.0 / 16.0,
      mean=(0.3,),
      std=(0.4,),
  )


SOURCES: dict[str, Callable[[Optional[str]], Dataset]] = {
    "digits": load_digits,
}


def load_dataset(name: str, data_dir: Optional[str] = None) -> Dataset:
  """Loads dataset ``name`` from the registry."""
  if name not in SOURCES:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SOURCES)}")
  return SOURCES[name](data_dir)
