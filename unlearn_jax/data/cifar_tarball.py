"""CIFAR-10 from its original "python version" archive, read in place.

The archive ``cifar-10-python.tar.gz`` (Krizhevsky, "Learning Multiple Layers
of Features from Tiny Images", 2009; the file torchvision's ``CIFAR10``
reads) holds ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and
``test_batch``: pickled dicts with ``data`` (uint8 ``[10000, 3072]``, each row
the red, green then blue 32×32 plane, i.e. CHW) and ``labels`` (10,000 ints).

The training pool is the 50,000 images of ``data_batch_1..5`` in that order
(the order torchvision uses, so the starting kit's ``forget_idx.npy`` indexes
it) and the held-out pool is ``test_batch``. If a ``forget_idx.npy`` lies next
to the archive it becomes the source-defined forget set
(``SplitSpec(forget="source")``). Normalisation is the starting kit's.

The batches are pickles (protocol 2, written by Python 2), so they are read
with :class:`CifarUnpickler`, which builds only what such a batch holds: a dict
of bytes keys, bytes values, lists of ints or bytes, and NumPy arrays (through
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``;
NumPy 2 names the first ``numpy._core.multiarray._reconstruct``). Any other
global a pickle asks for is refused before anything runs, so a doctored batch
cannot execute code, and a batch larger than :data:`MAX_BATCH_BYTES` is refused
before it is read. The unpickler runs at most :data:`MAX_PICKLE_OPS` opcodes (a real
batch of 10,000 images needs about 40,000), so a stream of cheap opcodes that each
build an object or push a reference (``DUP``, ``EMPTY_LIST``) cannot grow memory past
a few hundred bytes per opcode; an archive of more than :data:`MAX_ARCHIVE_MEMBERS`
entries is refused as it is scanned. Labels must be integers in ``[0, 10)`` (never
cast: 1.7 is refused, not read as 1), ``data`` an unpickled uint8 array.
"""

from __future__ import annotations

import io
import lzma
import os
import pickle
import tarfile
import zlib
from typing import Any, Optional

import numpy as np

from unlearn_jax.data.dataset import Dataset

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FORGET_FILE = "forget_idx.npy"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# The largest real batch (CIFAR-100's ``train``: 50,000 x 3,072 bytes) is ~147 MiB.
MAX_BATCH_BYTES = 256 * 2**20
# Opcodes the unpickler runs for one batch (a real one runs ~4 per image: 40,000 for CIFAR-10's 10,000).
MAX_PICKLE_OPS = 1_000_000
# Entries scanned in an archive (the real one has 8: the folder, 6 batches, batches.meta and readme.html).
MAX_ARCHIVE_MEMBERS = 1000

_RECONSTRUCT = np.zeros(0, np.uint8).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct


class _NdarrayType:
  """Stands for ``numpy.ndarray`` in a batch: usable only as ``_reconstruct``'s first argument."""

  def __repr__(self) -> str:
    return "numpy.ndarray"


_NDARRAY = _NdarrayType()


def _reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
  """``_reconstruct`` as pickled arrays call it: ``(ndarray, (0,), b"b")``; the data arrives by ``__setstate__``.

  Other arguments (a subclass, or a non-empty shape that would allocate memory
  before any data is read) are refused.
  """
  if subtype is not _NDARRAY or tuple(shape) != (0,) or dtype_code not in (b"b", "b"):
    raise pickle.UnpicklingError(f"unexpected array reconstruction arguments ({subtype!r}, {shape!r}, {dtype_code!r})")
  return _RECONSTRUCT(np.ndarray, (0,), b"b")


# (module, name) a CIFAR-10/100 python batch refers to -> what it gets.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by NumPy 1.x (the originals)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by NumPy 2.x
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
}


class CifarUnpickler(pickle._Unpickler):
  """An unpickler that builds only the objects of a CIFAR python batch (see :data:`ALLOWED_GLOBALS`).

  It is Python's own pure-Python unpickler (``pickle._Unpickler``) with every opcode
  counted: past :data:`MAX_PICKLE_OPS` the load stops, so what it builds is bounded by
  the stream's size plus a constant per opcode, whatever the opcodes are.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.ops = 0
    self.dispatch = {code: self._counted(handler) for code, handler in pickle._Unpickler.dispatch.items()}

  def _counted(self, handler):
    def run(unpickler):
      unpickler.ops += 1
      if unpickler.ops > MAX_PICKLE_OPS:
        raise pickle.UnpicklingError(f"more than {MAX_PICKLE_OPS:,} pickle opcodes, far beyond a CIFAR batch "
                                     f"(about 4 per image); refusing to build more")
      handler(unpickler)
    return run

  def find_class(self, module: str, name: str) -> Any:
    try:
      return ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f"refusing global '{module}.{name}': a CIFAR batch holds only a dict of "
                                   f"bytes, lists and NumPy arrays") from None


def safe_load_batch(raw: bytes) -> Any:
  """Unpickles ``raw`` with :class:`CifarUnpickler` (Python 2 strings as bytes, like the originals need)."""
  return CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()


def _locate(data_dir: str) -> tuple[str, str]:
  """``("tar", archive_path)`` or ``("dir", batches_folder)`` for ``data_dir``."""
  if os.path.isfile(data_dir):
    return "tar", data_dir
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"CIFAR-10 path {data_dir!r} does not exist")
  for candidate in (data_dir, os.path.join(data_dir, FOLDER)):
    if os.path.isfile(os.path.join(candidate, TEST_BATCH)):
      return "dir", candidate
  archive = os.path.join(data_dir, ARCHIVE)
  if os.path.isfile(archive):
    return "tar", archive
  raise FileNotFoundError(
      f"no CIFAR-10 data in {data_dir!r}: expected {ARCHIVE} or an extracted {FOLDER}/ folder")


def _decode_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  """Images ``[n, 32, 32, 3]`` uint8 and labels ``[n]`` of one pickled batch."""
  try:
    batch = safe_load_batch(raw)
  except Exception as e:  # pickle raises many types on corrupt or refused input
    raise ValueError(f"{where} is not a CIFAR-10 pickled batch: {' '.join(str(e).split())}") from None
  if not isinstance(batch, dict):
    raise ValueError(f"{where} is not a CIFAR-10 pickled batch (got {type(batch).__name__})")
  batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
  for key in ("data", "labels"):
    if key not in batch:
      raise ValueError(f"{where} has no {key!r} entry; keys are {sorted(batch)}")
  data = batch["data"]
  if not isinstance(data, np.ndarray):  # a nested list would be expanded by np.asarray: refuse it as it is
    raise ValueError(f"{where}: 'data' must be a uint8 array [n, 3072], got {type(data).__name__}")
  labels = _labels(batch["labels"], where)
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise ValueError(f"{where}: 'data' must be uint8 [n, 3072], got {data.dtype} {data.shape}")
  if labels.shape != (data.shape[0],):
    raise ValueError(f"{where}: 'labels' must have {data.shape[0]} entries, got shape {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() > 9):
    raise ValueError(f"{where}: labels must lie in [0, 10), got range [{labels.min()}, {labels.max()}]")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def _labels(value: Any, where: str) -> np.ndarray:
  """A batch's labels as int64, each checked to be an integer in [0, 10) before any conversion."""
  if isinstance(value, np.ndarray):
    if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
      raise ValueError(f"{where}: 'labels' must be a list of integers, got a {value.dtype} array of shape "
                       f"{value.shape}")
    items = value.tolist()
  elif isinstance(value, list):
    items = value
  else:
    raise ValueError(f"{where}: 'labels' must be a list of integers, got {type(value).__name__}")
  for i, label in enumerate(items):
    if type(label) is not int:
      raise ValueError(f"{where}: label {i} is {_short(label)}, not an integer (labels are class ids in [0, 10))")
    if not 0 <= label <= 9:
      raise ValueError(f"{where}: label {i} is {_short(label)}; labels must lie in [0, 10)")
  return np.asarray(items, np.int64).reshape(-1)


def _short(value: Any) -> str:
  text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"an integer of {value.bit_length()} bits"
  return text if len(text) <= 60 else text[:57] + "..."


def _check_size(size: int, where: str) -> None:
  if size > MAX_BATCH_BYTES:
    raise ValueError(f"{where} is {size / 2**20:.0f} MiB, larger than any CIFAR batch "
                     f"({MAX_BATCH_BYTES // 2**20} MiB at most): refusing to read it")


def _read_batches(kind: str, path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  names = TRAIN_BATCHES + (TEST_BATCH,)
  out = {}
  if kind == "dir":
    for name in names:
      file = os.path.join(path, name)
      if not os.path.isfile(file):
        raise FileNotFoundError(f"CIFAR-10 batch file {file!r} is missing")
      _check_size(os.path.getsize(file), file)
      with open(file, "rb") as f:
        out[name] = _decode_batch(f.read(), file)
    return out
  try:
    with tarfile.open(path, "r:*") as tar:
      members = _scan_members(tar, path)
      for name in names:
        if name not in members:
          raise FileNotFoundError(f"CIFAR-10 archive {path!r} has no member {FOLDER}/{name}")
        _check_size(members[name].size, f"{path}:{members[name].name}")
        raw = tar.extractfile(members[name]).read()
        out[name] = _decode_batch(raw, f"{path}:{members[name].name}")
  except tarfile.TarError as e:
    raise ValueError(f"{path!r} is not a readable tar archive: {e}") from e
  except FileNotFoundError:
    raise
  except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:  # truncated .gz, corrupt .xz/.bz2 streams
    text = " ".join(str(e).split())
    raise ValueError(f"{path!r} is not a readable tar archive: it is truncated or corrupt "
                     f"({type(e).__name__}{': ' + text if text else ''})") from None
  return out


def _scan_members(tar: tarfile.TarFile, path: str) -> dict[str, tarfile.TarInfo]:
  """Regular-file members by base name, scanning at most :data:`MAX_ARCHIVE_MEMBERS` entries."""
  members = {}
  for count, m in enumerate(tar, 1):
    if count > MAX_ARCHIVE_MEMBERS:
      raise ValueError(f"{path!r} has more than {MAX_ARCHIVE_MEMBERS} entries; the CIFAR-10 archive has 8: "
                       f"refusing to scan further")
    if m.isfile():
      members[os.path.basename(m.name)] = m
  return members


def load_cifar10_tarball(data_dir: Optional[str]) -> Dataset:
  """Loads CIFAR-10 from the python-version archive or its extracted folder.

  Args:
    data_dir: the ``cifar-10-python.tar.gz`` file, a folder containing it, a
      folder containing the extracted ``cifar-10-batches-py/``, or that
      folder itself.

  Returns:
    A 60,000-image :class:`Dataset` (train pool ``0..49999``, held-out pool
    ``50000..59999``), with ``forget_idx`` from ``forget_idx.npy`` when present.
  """
  if data_dir is None:
    raise ValueError("dataset 'cifar10_tarball' needs data_dir: the path of cifar-10-python.tar.gz or its folder")
  kind, path = _locate(data_dir)
  batches = _read_batches(kind, path)
  train = [batches[name] for name in TRAIN_BATCHES]
  images = np.concatenate([x for x, _ in train] + [batches[TEST_BATCH][0]])
  labels = np.concatenate([y for _, y in train] + [batches[TEST_BATCH][1]]).astype(np.int32)
  n_train = sum(len(y) for _, y in train)
  forget_idx = None
  folders = [os.path.dirname(path)] if kind == "tar" else [path, os.path.dirname(os.path.normpath(path))]
  found = [f for f in (os.path.join(d, FORGET_FILE) for d in folders) if os.path.isfile(f)]
  if found:
    forget_file = found[0]
    try:  # mapped, not read: a header declaring more than the file holds is refused before any allocation
      loaded = np.array(np.load(forget_file, mmap_mode="r", allow_pickle=False))
    except Exception as err:  # not .npy, an object array, a truncated file: np.load raises several types
      raise ValueError(f"{forget_file}: cannot read forget indices as a .npy integer array "
                       f"({type(err).__name__}: {' '.join(str(err).split())})") from None
    if not isinstance(loaded, np.ndarray) or not np.issubdtype(loaded.dtype, np.integer):
      raise ValueError(f"{forget_file}: forget indices must be a .npy array of integers, got "
                       f"{getattr(loaded, 'dtype', type(loaded).__name__)}")
    forget_idx = np.asarray(loaded, np.int64).ravel()
    if forget_idx.size == 0 or forget_idx.min() < 0 or forget_idx.max() >= n_train:
      raise ValueError(f"{forget_file}: forget indices must be a non-empty subset of [0, {n_train})")
    if np.unique(forget_idx).size != forget_idx.size:
      raise ValueError(f"{forget_file}: forget indices contain duplicates")
  return Dataset(
      name="cifar10",
      images=images,
      labels=labels,
      groups=np.full(len(labels), -1, np.int32),
      num_classes=10,
      train_idx=np.arange(n_train),
      test_idx=np.arange(n_train, len(labels)),
      forget_idx=forget_idx,
      scale=1.0 / 255.0,
      mean=CIFAR10_MEAN,
      std=CIFAR10_STD,
  )
