"""Small real datasets, a tiny trained-shape model and an in-process CLI runner for fast tests."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import pickle
import struct
import tarfile

import numpy as np
import pytest

from unlearn_jax.data import load_dataset, to_device


# Test data lives inside the repository: tests read nothing outside it.
DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
# The organizers' conformance vectors for the forgetting-quality metric (README.md there).
VECTORS_DIR = DATA_DIR / "vectors"

# The modules that run the metric's kernel at the same few shapes (N = 2, 3, 16 in chunks of 4):
# under ``pytest -n`` (``--dist loadgroup``) they run on one worker, which compiles each shape once.
METRIC_KERNELS = pytest.mark.xdist_group("metric-kernels")


def small_digits(n_retain: int = 64, n_forget: int = 16, n_val: int = 16, n_test: int = 16, seed: int = 0):
  """A device ``SplitData`` over a small random subset of the real digits data."""
  ds = load_dataset("digits")
  rng = np.random.default_rng(seed)
  train = rng.permutation(ds.train_idx)
  held = rng.permutation(ds.test_idx)
  return to_device(ds, retain=np.sort(train[:n_retain]), forget=np.sort(train[n_retain:n_retain + n_forget]),
                   validation=np.sort(held[:n_val]), test=np.sort(held[n_val:n_val + n_test]))


def load_results(output_dir) -> dict:
  """The ``results.json`` an evaluation wrote to ``output_dir``."""
  with open(os.path.join(output_dir, "results.json")) as f:
    return json.load(f)


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose opcodes can be chosen per type
  """Writes protocol-2 pickles the way Python 2 with NumPy 1.x wrote the CIFAR python batches.

  Python 2's ``str`` (bytes here, and the ASCII text NumPy passes, such as the dtype code
  ``'u1'``) becomes ``SHORT_BINSTRING``/``BINSTRING`` (Python 3 would write ``_codecs.encode``
  calls and unicode strings instead) and NumPy's ``_reconstruct`` is named
  ``numpy.core.multiarray._reconstruct`` (NumPy 2 says ``numpy._core``).
  """

  dispatch = dict(pickle._Pickler.dispatch)

  def __init__(self, file):
    super().__init__(file, protocol=2)

  def _save_py2_str(self, obj: bytes) -> None:
    n = len(obj)
    if n < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
    self.memoize(obj)

  def _save_py2_native_str(self, obj: str) -> None:  # Python 2's str literals ('u1', '|') were bytes
    self._save_py2_str(obj.encode("ascii"))

  dispatch[bytes] = _save_py2_str
  dispatch[str] = _save_py2_native_str

  def save_global(self, obj, name=None):
    if obj is np.zeros(0).__reduce__()[0]:
      self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
      self.memoize(obj)
      return
    super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
  """``obj`` pickled as Python 2 / NumPy 1.x did (see :class:`Py2Pickler`)."""
  buf = io.BytesIO()
  Py2Pickler(buf).dump(obj)
  return buf.getvalue()


def tiny_mlp_original(seed: int = 7):
  """``(model, data, ModelState)``: ``tiny_mlp`` freshly initialised over :func:`small_digits`."""
  import jax
  from unlearn_jax.models import get_model
  from unlearn_jax.training.state import init_variables
  from unlearn_jax.unlearning import ModelState
  data = small_digits()
  model = get_model("tiny_mlp", data.num_classes)
  params, stats = init_variables(model, jax.random.key(seed), data.image_shape)
  return model, data, ModelState(params, stats)


def run_cli(args, expect_rc: int = 0) -> tuple[str, str]:
  """Runs ``unlearn-jax ARGS`` in process; asserts its exit code; returns ``(stdout, stderr)``."""
  import contextlib
  import io
  from unlearn_jax import cli
  err, out = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    rc = cli.main(args)
  assert rc == expect_rc, err.getvalue()
  return out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ miniature data sources on disk


def cifar_batch(rng, n):
  """One CIFAR-10 python batch of ``n`` random images, as the pickled dict holds it."""
  return {b"batch_label": b"x", b"labels": rng.integers(0, 10, n).tolist(),
          b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"f"] * n}



def write_cifar(root, rng, per_batch=6, n_test=8, layout="tar"):
  """Writes a miniature CIFAR-10 python archive (or extracted folder); returns its path and batches."""
  batches = {f"data_batch_{i}": cifar_batch(rng, per_batch) for i in range(1, 6)}
  batches["test_batch"] = cifar_batch(rng, n_test)
  folder = os.path.join(root, "cifar-10-batches-py")
  os.makedirs(folder)
  for name, batch in batches.items():
    with open(os.path.join(folder, name), "wb") as f:
      f.write(py2_pickle(batch))
  if layout == "dir":
    return folder, batches
  archive = os.path.join(root, "cifar-10-python.tar.gz")
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(folder, arcname="cifar-10-batches-py")
  for name in batches:
    os.remove(os.path.join(folder, name))
  os.rmdir(folder)
  return archive, batches



# Persons 0..5 retain, 6..7 forget, 8..9 validation; 3 images each.
PEOPLE = {"retain.csv": range(0, 6), "forget.csv": range(6, 8), "validation.csv": range(8, 10)}



def write_competition(root, rng, id_style="kaggle"):
  """Writes a miniature competition folder; returns ``{file: [(image_id, person, age_group, pixels)]}``."""
  from PIL import Image

  rows = {}
  for name, people in PEOPLE.items():
    rows[name] = []
    for person in people:
      os.makedirs(os.path.join(root, "images", str(person)), exist_ok=True)
      for n in range(3):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "images", str(person), f"{n}.png"))
        image_id = f"{person}_{n}" if id_style == "kaggle" else f"images/{person}/{n}.png"
        rows[name].append((image_id, person, (person + n) % 10, pixels))
    with open(os.path.join(root, name), "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["image_id", "person_id", "age", "age_group"])
      for image_id, person, group, _ in rows[name]:
        w.writerow([image_id, person, 20 + group, group])
  return rows



# ------------------------------------------------------------------ confidence populations for the metric


def random_case(rng, n, e, kind):
  """``(unlearned, retrained)`` ``[n, e]`` confidences of one kind: shifted, ties, saturated or narrow."""
  r = rng.normal(size=(n, e))
  u = rng.normal(size=(n, e))
  if kind == "shifted":
    u = u * rng.uniform(0.5, 2.0, size=e) + rng.uniform(-1.5, 1.5, size=e)
  elif kind == "ties":  # heavy ties: data on a 0.1 grid, like rounded confidences
    r, u = np.round(r, 1), np.round(u - 0.3, 1)
  elif kind == "saturated":  # some models at the +-103.6163 saturation
    sat = -np.log(1e-45)
    u = u * 3 + 5
    u[rng.random(size=u.shape) < 0.2] = sat
    r[rng.random(size=r.shape) < 0.1] = -sat
  elif kind == "narrow":  # ranges below 2: many empty intervals (l > r)
    u, r = 0.2 * u, 0.25 * r + 0.1
  return u, r



def mixed_case(rng, n):
  """Four examples: shifted/rescaled, rounded (ties), saturated, narrow."""
  cols = [random_case(rng, n, 1, kind) for kind in ("shifted", "ties", "saturated", "narrow")]
  return np.concatenate([c[0] for c in cols], 1), np.concatenate([c[1] for c in cols], 1)


def set_csv_row(path, line, **values):
  """Replaces columns of CSV data row ``line`` (1 = the first row after the header)."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header = rows[0]
  for k, v in values.items():
    rows[line][header.index(k)] = v
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
