"""Scoring two populations: the only place the competition metric is called, and the NaN drop before it."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np

from unlearn_jax import metrics
from unlearn_jax.protocol.errors import ProtocolError
from unlearn_jax.protocol.stages import OUTPUT_NAMES


@dataclasses.dataclass(frozen=True)
class Scores:
  """Forgetting quality, per-example epsilons, final score and the simple MIA of each population
  (``None`` where the forget or test set is too small for it)."""

  forgetting_quality: float
  epsilons: np.ndarray
  final_score: float
  mia_unlearned: Optional[np.ndarray]
  mia_retrained: Optional[np.ndarray]


def nonfinite_seeds(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
  """Seeds (row indices) with any non-finite output."""
  bad = np.zeros(len(outputs["retain_accuracy"]), bool)
  for name in OUTPUT_NAMES:
    a = np.asarray(outputs[name]).reshape(len(bad), -1)
    bad |= ~np.isfinite(a).all(axis=1)
  return np.flatnonzero(bad)


def kept_seeds(unlearned: Mapping[str, np.ndarray], method_name: str, allow_nan_drop: bool) -> np.ndarray:
  """The seeds to score: all, or (``allow_nan_drop``) those whose unlearned outputs are finite.

  Raises:
    ProtocolError: the method diverged on some seeds without ``allow_nan_drop``, or fewer than 2 remain.
  """
  n = len(unlearned["retain_accuracy"])
  bad = nonfinite_seeds(unlearned)
  if not bad.size:
    return np.arange(n)
  if not allow_nan_drop:
    raise ProtocolError(f"method {method_name!r} diverged (non-finite outputs) on {bad.size} of "
                        f"{n} seeds: {bad.tolist()}; pass --allow-nan-drop to drop them")
  keep = np.setdiff1d(np.arange(n), bad)
  if keep.size < 2:
    raise ProtocolError(f"method {method_name!r} diverged on {bad.size} of {n} seeds; fewer than 2 remain")
  return keep


def score(unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray]) -> Scores:
  """Forgetting quality, epsilons, final score and the simple MIA of two populations.

  The simple MIA needs at least 10 forget and 10 test examples; below that
  its entries are ``None`` (recorded, not an error).
  """
  result = metrics.forgetting_metric(unlearned["forget_confidence"], retrained["forget_confidence"])
  fq = float(result.forgetting_quality)
  final = float(metrics.final_score(fq, unlearned["retain_accuracy"], retrained["retain_accuracy"],
                                    unlearned["test_accuracy"], retrained["test_accuracy"]))
  mia = {}
  for name, out in (("unlearned", unlearned), ("retrained", retrained)):
    try:
      mia[name] = np.asarray(metrics.simple_mia(out["forget_loss"], out["test_loss"]), np.float64).reshape(-1)
    except ValueError:
      mia[name] = None
  return Scores(fq, np.asarray(result.epsilons, np.float64), final, mia["unlearned"], mia["retrained"])
