"""Data sources: load a dataset into a host-side :class:`Dataset`.

The registry ``SOURCES`` maps a dataset name to a loader
``fn(data_dir: str | None) -> Dataset``; no loader ever downloads.

* ``digits``: embedded (it ships with scikit-learn), needs no files; ``data_dir`` is ignored.
* ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``, ``svhn_cropped``:
  tensorflow-datasets prepared in ``array_record`` format under ``data_dir``
  (``None``: tfds' default directory); see :mod:`unlearn_jax.data.tfds_source`.
  Any other tfds image-classification dataset loads as ``tfds:<name>``.
* ``cifar10_tarball``: the original ``cifar-10-python.tar.gz`` (or its extracted
  folder) at ``data_dir``; see :mod:`unlearn_jax.data.cifar_tarball`.
* ``competition``: the Kaggle competition folder (``retain.csv``,
  ``forget.csv``, ``validation.csv``, ``images/``) at ``data_dir``; see
  :mod:`unlearn_jax.data.competition`.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import numpy as np

from unlearn_jax.data.cifar_tarball import load_cifar10_tarball
from unlearn_jax.data.competition import load_competition
from unlearn_jax.data.dataset import Dataset
from unlearn_jax.data.tfds_source import load_tfds

TFDS_PREFIX = "tfds:"


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
    "cifar10": functools.partial(load_tfds, "cifar10"),
    "cifar100": functools.partial(load_tfds, "cifar100"),
    "mnist": functools.partial(load_tfds, "mnist"),
    "fashion_mnist": functools.partial(load_tfds, "fashion_mnist"),
    "svhn_cropped": functools.partial(load_tfds, "svhn_cropped"),
    "cifar10_tarball": load_cifar10_tarball,
    "competition": load_competition,
}


def load_dataset(name: str, data_dir: Optional[str] = None) -> Dataset:
  """Loads dataset ``name`` (a ``SOURCES`` key or ``tfds:<tfds name>``) from ``data_dir``."""
  if name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
    return load_tfds(name[len(TFDS_PREFIX):], data_dir)
  if name not in SOURCES:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SOURCES)} or {TFDS_PREFIX}<name>")
  return SOURCES[name](data_dir)
