"""``--download``: prepare a tensorflow-datasets source in ``array_record`` format on a connected machine.

The loaders never download (:mod:`unlearn_jax.data.tfds_source`); this module is
the one place that does, and only when asked. It runs
``tfds.builder(name, data_dir=..., file_format="array_record").download_and_prepare()``,
which for the tfds catalogue's own builders needs TensorFlow (they encode images
with ``tf.image`` and read archives with ``tf.io.gfile``) and ``importlib_resources``;
the ``download`` extra installs both (``pip install 'unlearn_jax[download]'``).
Without them, or without a network, it fails with one line that gives the exact
command to run where they are available, and names the ``cifar10_tarball`` source,
which reads the original CIFAR-10 archive with nothing else installed.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Optional

from unlearn_jax.data.sources import SOURCES, TFDS_PREFIX
from unlearn_jax.data.tfds_source import load_tfds, quiet_tfds

# dataset names of SOURCES read through tensorflow-datasets (cifar10, cifar100, mnist, fashion_mnist, svhn_cropped)
TFDS_SOURCES = tuple(name for name, loader in SOURCES.items() if getattr(loader, "func", None) is load_tfds)
# what the tfds catalogue's builders import while preparing (beyond tensorflow-datasets itself)
REQUIREMENTS = ("tensorflow", "importlib_resources")
INSTALL = "pip install 'unlearn_jax[download]'"
TARBALL_HINT = ("for CIFAR-10 without TensorFlow, download cifar-10-python.tar.gz and use --dataset "
                "cifar10_tarball --data-dir <its folder>")


def tfds_name(dataset: str) -> Optional[str]:
  """The tfds name of ``dataset`` (a :data:`TFDS_SOURCES` entry or ``tfds:<name>``), else ``None``."""
  if dataset in TFDS_SOURCES:
    return dataset
  if dataset.startswith(TFDS_PREFIX) and len(dataset) > len(TFDS_PREFIX):
    return dataset[len(TFDS_PREFIX):]
  return None


def check_downloadable(dataset: str) -> str:
  """The tfds name of ``dataset``; a one-line ``ValueError`` if ``--download`` cannot prepare it."""
  name = tfds_name(dataset)
  if name is None:
    raise ValueError(f"--download prepares the tensorflow-datasets sources {list(TFDS_SOURCES)} (or "
                     f"tfds:<name>), not {dataset!r}; {TARBALL_HINT}")
  return name


def prepare_command(name: str, data_dir: Optional[str]) -> str:
  """The shell command that prepares ``name`` under ``data_dir`` on a machine with the extra installed."""
  where = f", data_dir={os.path.abspath(data_dir)!r}" if data_dir else ""
  return (f"{INSTALL} && python -c \"import tensorflow_datasets as tfds; tfds.builder({name!r}{where}, "
          f"file_format='array_record').download_and_prepare()\"")


def _missing(modules) -> list[str]:
  return [m for m in modules if importlib.util.find_spec(m) is None]


def prepare_tfds(name: str, data_dir: Optional[str], log: Optional[Callable[[str], None]] = None) -> str:
  """Downloads and prepares tfds dataset ``name`` under ``data_dir`` (``None``: tfds' default) unless prepared.

  Returns:
    The folder of the prepared dataset version.

  Raises:
    ValueError: one line, on an unknown name, missing requirements, or any
      failure to download or prepare (no network, a checksum mismatch, a full
      disk), giving the command to run elsewhere and the ``cifar10_tarball`` route.
  """
  import tensorflow_datasets as tfds  # deferred: importing tfds costs ~0.4 s

  log = log or (lambda line: None)
  if data_dir is not None:
    os.makedirs(data_dir, exist_ok=True)
  try:
    with quiet_tfds():
      builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
      prepared = builder.is_prepared()
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"unknown tfds dataset {name!r}") from None
  if prepared:
    log(f"[download] {name} already prepared in {builder.data_dir}")
    return str(builder.data_dir)
  # The catalogue's builders need TensorFlow to encode images; say so before downloading anything.
  missing = _missing(REQUIREMENTS) if type(builder).__module__.startswith("tensorflow_datasets.") else []
  if missing:
    raise ValueError(f"--download needs {' and '.join(missing)} to prepare tfds dataset {name!r}: run "
                     f"`{prepare_command(name, data_dir)}`; {TARBALL_HINT}")
  log(f"[download] preparing {name} in {builder.data_dir} (array_record)")
  try:
    builder.download_and_prepare()
  except Exception as err:  # tfds and its downloader raise many types: network, checksum, disk, imports
    detail = " ".join(str(err).split())[:300]
    raise ValueError(f"could not download and prepare tfds dataset {name!r} ({type(err).__name__}: {detail}); "
                     f"on a machine with internet run `{prepare_command(name, data_dir)}`; {TARBALL_HINT}") from None
  log(f"[download] {name} prepared in {builder.data_dir}")
  return str(builder.data_dir)
