"""The ceiling of a setup: F of ``retrain`` as the method against the reference population.

Two populations from one distribution do not score F = 1 (a few examples are separable
by chance, how many depends on N and on the confidences' shape), so a method's F reads
best beside F_ceiling: F of N more retrained models (``retrain`` run through the
unlearning stage, whose key stream ``fold_in(root, UNLEARN)`` differs from the reference
models' ``fold_in(root, RETRAIN)``) against the N reference retrained models.

Where it lives: a small JSON ``ceiling-n<N>.json`` inside the retrained models' cache
directory (``<cache>/retrained-<key>/``), whose key already names the data, split, model,
recipe, dtype and seed; the file name adds N. Every evaluation of ``retrain`` with its
default hyperparameters (and no dropped seeds) writes it; ``evaluate --with-ceiling``
computes it when missing, storing the extra models' chunks under
``<cache>/retrained-<key>/ceiling/`` so that later runs reuse them. Any result of the same
setup then finds it through ``results["cache"]["retrained"]``. The protocol computes it
against the reference already in memory (:func:`unlearn_jax.protocol.run.ceiling_of`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional

import numpy as np

from unlearn_jax import checkpoint

CEILING_METHOD = "retrain"
MAX_FILE_BYTES = 1 << 20  # a ceiling file is a few hundred bytes; anything larger is not one


def ceiling_path(retrained_dir: str, num_models: int) -> str:
  """Where the ceiling of ``num_models`` models against the store at ``retrained_dir`` lives."""
  return os.path.join(retrained_dir, f"ceiling-n{int(num_models)}.json")


def write(retrained_dir: str, num_models: int, forgetting_quality: float, final_score: float, seed: int,
          unlearned_chunks: str) -> str:
  """Stores the ceiling of ``num_models`` models against the store at ``retrained_dir``; returns its path."""
  path = ceiling_path(retrained_dir, num_models)
  payload = {"forgetting_quality": float(forgetting_quality), "final_score": float(final_score),
             "num_models": int(num_models), "seed": int(seed), "unlearned_chunks": unlearned_chunks}
  checkpoint.atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
  return path


def read(retrained_dir: Optional[str], num_models: Optional[int]) -> Optional[dict[str, Any]]:
  """The stored ceiling (with its ``path``), or ``None`` when absent or unreadable."""
  if not retrained_dir or num_models is None:
    return None
  path = ceiling_path(retrained_dir, num_models)
  try:
    from unlearn_jax import files  # a regular file only: a FIFO or link in the cache is ignored, never waited on
    data = json.loads(files.read_regular(path, MAX_FILE_BYTES, "ceiling file").decode("utf-8"))
    fq = float(data["forgetting_quality"])
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return None
  if not math.isfinite(fq):
    return None
  return dict(data, forgetting_quality=fq, path=path)


def of_results(results: Mapping[str, Any]) -> Optional[dict[str, Any]]:
  """The ceiling of a results dict: its own ``ceiling`` field, else the one stored in its retrained cache."""
  own = results.get("ceiling")
  if isinstance(own, Mapping) and own.get("forgetting_quality") is not None:
    return dict(own)
  if results.get("dropped_seeds"):  # scored at fewer than N models: the stored ceiling's N does not match
    return None
  cache, n = results.get("cache"), results.get("num_models")
  retrained_dir = cache.get("retrained") if isinstance(cache, Mapping) else None
  if not isinstance(retrained_dir, str) or not isinstance(n, int) or isinstance(n, bool):
    return None
  stored = read(retrained_dir, n)
  if stored is None:
    return None
  return summary(results["forgetting_quality"], stored)


def summary(forgetting_quality: float, ceiling: Mapping[str, Any]) -> dict[str, Any]:
  """``{"forgetting_quality": F_ceiling, "ratio": F / F_ceiling (None when F_ceiling = 0), "num_models", "path"}``
  (and ``subsampled_from``: the stored ceiling's N, when it was rescored on a result's kept seeds)."""
  fc = float(ceiling["forgetting_quality"])
  out = {"forgetting_quality": fc, "ratio": float(forgetting_quality) / fc if fc > 0 else None,
         "num_models": ceiling.get("num_models"), "path": ceiling.get("path")}
  if ceiling.get("subsampled_from") is not None:  # rescored at the result's N after dropped seeds
    out["subsampled_from"] = ceiling["subsampled_from"]
  return out
