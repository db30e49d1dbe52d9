"""The per-model populations behind one result: ``DIR/populations.npz`` beside ``results.json``.

Every evaluation with an output directory writes it (atomically, with the checksummed manifest of
:func:`unlearn_jax.checkpoint.save_arrays`) so that ``compare``, ``stability`` and the
bootstrap can run later without retraining. Arrays (float32 unless noted):

* ``unlearned/forget_confidence``, ``retrained/forget_confidence`` ``[N, E]``: the
  logit-scaled confidences the metric reads;
* ``unlearned/<split>_accuracy``, ``retrained/<split>_accuracy`` ``[N]`` for retain,
  forget and test;
* ``unlearned/<split>_margin``, ``retrained/<split>_margin`` ``[N, M]`` for retain and
  heldout, present when the run recorded margins (``--metrics klom``);
* ``diagnostics/<name>`` ``[N, ...]`` (the method's dtype): the method's own
  ``UnlearnResult.metrics`` per scored model (:mod:`unlearn_jax.results.diagnostics`);
* ``epsilons`` ``[E]`` (float64) and ``points`` ``[E]`` (float64): the per-example
  epsilons and their points;
* ``diagnostics/<name>`` ``[N, ...]``: the method's own per-seed diagnostics
  (``UnlearnResult.metrics``) in its dtype, where the unlearning chunks recorded them.

N is the number of scored models (after dropped seeds, if any). About
``2 * N * (E + 3) * 4`` bytes: 0.6 MB at N = 512, E = 144.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from unlearn_jax import checkpoint
from unlearn_jax.metrics import epsilon_points
from unlearn_jax.results import diagnostics, untrusted
from unlearn_jax.results.record import Evaluation, Populations

POPULATIONS_FILE = "populations.npz"
KINDS = ("unlearned", "retrained")
PER_MODEL = ("retain_accuracy", "forget_accuracy", "test_accuracy")
PER_EXAMPLE = ("forget_confidence", "retain_margin", "heldout_margin")
DIAGNOSTICS = "diagnostics"  # the method's own per-seed diagnostics: diagnostics/<name> [N, ...], as it returned them


def to_arrays(pops: Populations) -> dict[str, np.ndarray]:
  """The flat arrays of the populations file of one evaluation's scored populations."""
  out: dict[str, np.ndarray] = {}
  for kind, outputs in (("unlearned", pops.unlearned), ("retrained", pops.retrained)):
    for name in PER_MODEL + PER_EXAMPLE:
      if name in outputs:
        out[f"{kind}/{name}"] = np.asarray(outputs[name], np.float32)
  for name, value in pops.diagnostics.items():
    out[f"{DIAGNOSTICS}/{name}"] = np.asarray(value)
  eps = np.asarray(pops.epsilons, np.float64)
  out["epsilons"] = eps
  out["points"] = epsilon_points(eps, int(out["unlearned/forget_confidence"].shape[0]))
  return out


def write_populations(evaluation: Evaluation, output_dir: str) -> str:
  """Writes ``output_dir/populations.npz`` of ``evaluation`` atomically; returns its path."""
  path = os.path.join(output_dir, POPULATIONS_FILE)
  checkpoint.save_arrays(path, to_arrays(evaluation.populations),
                         {"method": evaluation.record.get("method"),
                          "num_models": evaluation.record.get("num_models_scored")})
  return path


def read_populations(path: str) -> dict[str, np.ndarray]:
  """The arrays of a populations file (a file or a run directory), checked for shape consistency.

  Raises:
    ValueError: missing, unreadable or inconsistent file (one-line message).
  """
  if os.path.isdir(path):
    path = os.path.join(path, POPULATIONS_FILE)
  if not os.path.exists(path):
    raise ValueError(f"no populations file at {path!r}; 'unlearn-jax evaluate' writes it (rerun the evaluation: "
                     f"it reuses the cached models)")
  try:
    arrays, _ = checkpoint.load_arrays(path)
  except (checkpoint.CorruptEntry, OSError) as err:
    raise ValueError(f"cannot read populations file {path!r}: {' '.join(str(err).split())}") from None
  required = [f"{k}/{n}" for k in KINDS for n in PER_MODEL + ("forget_confidence",)] + ["epsilons", "points"]
  missing = [k for k in required if k not in arrays]
  if missing:
    raise ValueError(f"populations file {path!r} lacks arrays {missing}")
  for name, value in arrays.items():
    _check_real(path, name, value)
  untrusted.check_population_arrays(arrays, f"populations file {path!r}")  # dtypes, ranges, points of epsilons
  n, e = arrays["unlearned/forget_confidence"].shape
  for name, value in arrays.items():
    expect = None
    if name.endswith("_accuracy"):
      expect = (n,)
    elif name.endswith("forget_confidence"):
      expect = (n, e)
    elif name in ("epsilons", "points"):
      expect = (e,)
    elif name.endswith("_margin"):
      other = arrays.get(name.replace("unlearned/", "retrained/") if name.startswith("unlearned/")
                         else name.replace("retrained/", "unlearned/"))
      expect = (n, value.shape[1]) if value.ndim == 2 and other is not None and other.shape == value.shape else ()
    if name.startswith(diagnostics.POPULATIONS_PREFIX):  # a method's own values: one row per model, any values
      if value.ndim < 1 or value.shape[0] != n:
        raise ValueError(f"populations file {path!r}: array {name!r} has shape {value.shape}, expected ({n}, ...)")
      continue
    if expect is not None and value.shape != expect:
      raise ValueError(f"populations file {path!r}: array {name!r} has shape {value.shape}, expected {expect}")
    if name.startswith(f"{DIAGNOSTICS}/"):  # the method's own values, as it returned them (NaN included)
      if value.ndim < 1 or value.shape[0] != n:
        raise ValueError(f"populations file {path!r}: array {name!r} has shape {value.shape}, expected ({n}, ...)")
      continue
    if not np.all(np.isfinite(value)):
      raise ValueError(f"populations file {path!r}: array {name!r} has non-finite values")
  return arrays


def _check_real(path: str, name: str, value: np.ndarray) -> None:
  """Refuses an array that is not real numbers (complex values are never cast to their real part)."""
  if np.issubdtype(value.dtype, np.complexfloating):
    raise ValueError(f"populations file {path!r}: array {name!r} is complex ({value.dtype}); it must hold real numbers")
  if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
    raise ValueError(f"populations file {path!r}: array {name!r} must hold real numbers, got dtype {value.dtype}")


def outputs(arrays: Mapping[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
  """``{"forget_confidence": ..., "retain_accuracy": ..., ...}`` of one population (``kind``: unlearned/retrained)."""
  prefix = f"{kind}/"
  return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
