"""Small real datasets for fast tests."""

from __future__ import annotations

import json
import os
import pathlib

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
