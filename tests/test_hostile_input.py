"""Hostile and malformed input: no code from data, no reads outside the data folder, one-line errors.

Each test reproduces an attack or a bad input and checks the clean outcome: a one-line
``ValueError`` (``unlearn-jax: error: ...`` and exit code 2 through the CLI), nothing
executed, nothing read outside the data folder.
"""

from __future__ import annotations

import csv
import os
import pickle
import pickletools
import struct
import tarfile
import zlib

import numpy as np
import pytest

from tests.helpers import py2_pickle
from tests.test_data import _write_cifar, _write_competition
from unlearn_jax.data import load_dataset
from unlearn_jax.data.cifar_tarball import ALLOWED_GLOBALS, safe_load_batch

# ---------------------------------------------------------------------------
# 1. CIFAR python batches are read with an unpickler that builds nothing but their contents.


def _real_layout_batch(n=4, seed=0):
  """A batch with the fields and types of the original ``data_batch_*`` (Python 2 ``str`` -> bytes)."""
  rng = np.random.default_rng(seed)
  return {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(),
          b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
          b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def _globals(raw: bytes) -> set[str]:
  return {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


def test_cifar_batch_layout_as_python2_wrote_it_loads_with_only_numpy_globals():
  batch = _real_layout_batch()
  raw = py2_pickle(batch)
  # The original files: protocol 2, a dict opened by EMPTY_DICT, Python 2 str as SHORT_BINSTRING,
  # and the array built by numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b') with
  # a numpy.dtype('u1') state: exactly three globals.
  assert raw[:3] == b"\x80\x02}" and b"U\x04data" in raw
  assert _globals(raw) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
  loaded = safe_load_batch(raw)
  assert set(loaded) == set(batch) and loaded[b"labels"] == batch[b"labels"]
  assert loaded[b"batch_label"] == batch[b"batch_label"] and loaded[b"filenames"] == batch[b"filenames"]
  assert loaded[b"data"].dtype == np.uint8
  np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
  # NumPy 2 writes the same array with numpy._core.multiarray._reconstruct: admitted too.
  numpy2 = raw.replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n")
  np.testing.assert_array_equal(safe_load_batch(numpy2)[b"data"], batch[b"data"])
  assert {f"{m}.{n}" for m, n in ALLOWED_GLOBALS} == {
      "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}


class _Payload:
  """Pickles as a call of ``func(*args)``: what a doctored batch would carry."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


@pytest.mark.parametrize("payload", ["os.system", "exec"])
def test_cifar_batch_with_a_reduce_payload_is_refused_and_not_executed(tmp_path, payload):
  marker = tmp_path / "ran"
  if payload == "os.system":
    evil = _Payload(os.system, f"touch {marker}")
  else:
    evil = _Payload(exec, f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')")
  raw = py2_pickle({b"data": evil, b"labels": [0]})
  folder, _ = _write_cifar(str(tmp_path / "c"), np.random.default_rng(0), layout="dir")
  with open(os.path.join(folder, "data_batch_2"), "wb") as f:
    f.write(raw)
  with pytest.raises(ValueError) as err:
    load_dataset("cifar10_tarball", folder)
  message = str(err.value)
  assert "\n" not in message and "data_batch_2 is not a CIFAR-10 pickled batch: refusing global" in message
  assert ("'posix.system'" in message or "'nt.system'" in message) if payload == "os.system" \
      else "'__builtin__.exec'" in message
  assert not marker.exists()
  # the same bytes through plain pickle do run the payload: the refusal above is what stops it
  pickle.loads(raw, encoding="bytes")
  assert marker.exists()


def test_cifar_array_reconstruction_cannot_allocate_or_build_other_types():
  # _reconstruct with a huge shape would allocate before any data is read; ndarray.__new__ likewise.
  raw = py2_pickle(np.zeros(3, np.uint8)).replace(b"K\x00\x85", b"J\x00\x00\x00\x40\x85", 1)
  with pytest.raises(pickle.UnpicklingError, match="unexpected array reconstruction arguments"):
    safe_load_batch(raw)
  newobj = b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85\x81."  # NEWOBJ ndarray((2**30,))
  with pytest.raises(Exception) as err:
    safe_load_batch(newobj)
  assert not isinstance(err.value, MemoryError)


def test_cifar_oversized_batch_is_refused_before_reading(tmp_path, monkeypatch):
  from unlearn_jax.data import cifar_tarball
  archive, _ = _write_cifar(str(tmp_path), np.random.default_rng(0))
  monkeypatch.setattr(cifar_tarball, "MAX_BATCH_BYTES", 1000)
  with pytest.raises(ValueError, match=r"data_batch_1 is 0 MiB, larger than any CIFAR batch"):
    load_dataset("cifar10_tarball", archive)


# ---------------------------------------------------------------------------
# 2. The competition loader reads nothing outside its data directory.


@pytest.fixture
def competition_dir(tmp_path):
  root = tmp_path / "data"
  root.mkdir()
  _write_competition(str(root), np.random.default_rng(0))
  outside = tmp_path / "outside"
  outside.mkdir()
  from PIL import Image
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(outside / "secret.png")
  return root, outside


def _set_row(path, line, **values):
  """Replaces columns of CSV data row ``line`` (1 = the first row after the header)."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header = rows[0]
  for k, v in values.items():
    rows[line][header.index(k)] = v
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)


@pytest.mark.parametrize("image_id, person_id", [
    ("../outside/secret.png", "0"),
    ("ABSOLUTE", "0"),
    ("secret", "../../outside"),
    ("0", "../.."),
])
def test_competition_row_pointing_outside_the_data_dir_is_refused(competition_dir, image_id, person_id):
  root, outside = competition_dir
  if image_id == "ABSOLUTE":
    image_id = str(outside / "secret.png")
  _set_row(root / "forget.csv", 2, image_id=image_id, person_id=person_id)
  with pytest.raises(ValueError) as err:
    load_dataset("competition", str(root))
  message = str(err.value)
  assert "\n" not in message
  assert f"forget.csv line 3: image_id {image_id!r} with person_id {person_id!r} points to" in message
  assert f"outside the data directory {str(root.resolve())!r}" in message


def test_competition_symlink_out_of_the_data_dir_is_refused(competition_dir):
  root, outside = competition_dir
  os.remove(root / "images" / "7" / "1.png")
  os.symlink(outside / "secret.png", root / "images" / "7" / "1.png")
  with pytest.raises(ValueError, match=r"forget\.csv line 6: image_id '7_1' .* points to .*outside/secret\.png"):
    load_dataset("competition", str(root))
  os.remove(root / "images" / "7" / "1.png")
  os.rename(root / "images" / "7", outside / "7")
  os.symlink(outside / "7", root / "images" / "7")  # a linked folder
  with pytest.raises(ValueError, match=r"forget\.csv line 5: .*outside the data directory"):
    load_dataset("competition", str(root))
  os.remove(root / "forget.csv")
  (outside / "forget.csv").write_text("image_id,person_id,age_group\n")
  os.symlink(outside / "forget.csv", root / "forget.csv")
  with pytest.raises(ValueError, match=r"forget\.csv' is a link to .*outside the data directory"):
    load_dataset("competition", str(root))


def test_competition_links_inside_the_data_dir_still_load(competition_dir):
  root, _ = competition_dir
  os.rename(root / "images", root / "real_images")
  os.symlink(root / "real_images", root / "images")
  assert load_dataset("competition", str(root)).images.shape == (30, 32, 32, 3)


def _png_header(width: int, height: int) -> bytes:
  """A PNG whose header declares ``width x height`` (no pixel data: opening it reads only the header)."""
  def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
      chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 10_000])  # 400 MP: PIL's error; 100 MP: PIL only warns
def test_competition_decompression_bomb_is_a_one_line_error(competition_dir, side):
  root, _ = competition_dir
  (root / "images" / "3" / "2.png").write_bytes(_png_header(side, side))
  with pytest.raises(ValueError) as err:
    load_dataset("competition", str(root))
  message = str(err.value)
  assert "\n" not in message
  assert "retain.csv line 13: image" in message and "3/2.png' is too large to load" in message
