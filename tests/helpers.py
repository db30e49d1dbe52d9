"""Small real datasets, a tiny trained-shape model and an in-process CLI runner for fast tests."""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import struct

import numpy as np

from unlearn_jax.data import load_dataset, to_device


# Test data lives inside the repository: tests read nothing outside it.
DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
# The organizers' conformance vectors for the forgetting-quality metric (README.md there).
VECTORS_DIR = DATA_DIR / "vectors"


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
