"""The typed result of one evaluation: the ``results.json`` record beside the populations it was scored on.

:class:`Evaluation` separates what is written as JSON (:attr:`Evaluation.record`, the
documented ``results.json`` fields, JSON values only) from the host arrays behind it
(:class:`Populations`, written as ``populations.npz``). Every entry point of the
library (``unlearn-jax evaluate``, :func:`unlearn_jax.evaluate`, every sweep point)
returns or writes one of these, built by :func:`unlearn_jax.protocol.run.evaluate_on`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any, Mapping, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Populations:
  """The scored populations (after any dropped seeds) and the per-example epsilons.

  Attributes:
    unlearned, retrained: per population, ``forget_confidence`` ``[N, E]``, ``retain_accuracy`` /
      ``forget_accuracy`` / ``test_accuracy`` ``[N]``, ``forget_loss`` ``[N, E]``, ``test_loss``
      ``[N, T]`` and, where recorded, ``retain_margin`` / ``heldout_margin`` ``[N, M]``.
    epsilons: ``[E]`` per-example epsilons of the metric.
    original_confidence: ``[E]`` the original model's forget confidences (the no-op check), if known.
    diagnostics: the method's own per-seed diagnostics (``UnlearnResult.metrics``), ``[N, ...]`` each.
  """

  unlearned: Mapping[str, np.ndarray]
  retrained: Mapping[str, np.ndarray]
  epsilons: np.ndarray
  original_confidence: Optional[np.ndarray] = None
  diagnostics: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def num_models(self) -> int:
    return int(np.asarray(self.unlearned["forget_confidence"]).shape[0])


@dataclasses.dataclass
class Evaluation:
  """One finished evaluation.

  Attributes:
    record: the ``results.json`` fields (JSON values only).
    populations: the arrays it was scored on.
    paths: the files written for it (``results``, ``populations``, ``plots``), empty when nothing was written.
  """

  record: dict[str, Any]
  populations: Populations
  paths: dict[str, Any] = dataclasses.field(default_factory=dict)


def jsonable(v: Any) -> Any:
  """``v`` as JSON values: mappings and sequences recursively, NumPy scalars as Python ones,
  dataclasses as dicts, anything else as its ``repr``."""
  if isinstance(v, Mapping):
    return {str(k): jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(x) for x in v]
  if isinstance(v, (np.integer, np.floating)):
    return v.item()
  if dataclasses.is_dataclass(v) and not isinstance(v, type):
    return jsonable(dataclasses.asdict(v))
  if v is None or isinstance(v, (bool, int, float, str)):
    return v
  return repr(v)


def accuracy_summary(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """``{split: {"mean", "per_model"}}`` of the retain, forget and test accuracies of one population."""
  out = {}
  for name in ("retain_accuracy", "forget_accuracy", "test_accuracy"):
    a = np.asarray(outputs[name], np.float64).reshape(-1)
    out[name] = {"mean": float(a.mean()), "per_model": a.tolist()}
  return out


def diagnostics_summary(diagnostics: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The ``diagnostics`` field: per diagnostic, mean / sd / min / max over seeds of its per-seed value.

  A diagnostic that is one number per seed is that number; one that is an array per seed
  (e.g. a loss per epoch) is summarised by its last entry, and its per-seed ``shape`` is
  recorded. Non-finite values are left out of the statistics and counted (``nonfinite``).
  """
  out = {}
  for name, value in sorted(diagnostics.items()):
    a = np.asarray(value)
    if a.ndim == 0 or not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
      continue
    per_seed = a.reshape(a.shape[0], -1)
    if per_seed.shape[1] == 0:
      continue
    last = per_seed[:, -1].astype(np.float64)
    finite = last[np.isfinite(last)]
    stats = ({"mean": float(finite.mean()), "sd": float(finite.std()), "min": float(finite.min()),
              "max": float(finite.max())} if finite.size else {"mean": None, "sd": None, "min": None, "max": None})
    out[name] = stats | {"shape": list(a.shape[1:]), "of": "value" if per_seed.shape[1] == 1 else "last entry",
                         "nonfinite": int(last.size - finite.size)}
  return out


def mia_summary(mia_unlearned: Optional[np.ndarray], mia_retrained: Optional[np.ndarray]) -> dict[str, Any]:
  """The ``mia`` field: mean simple-MIA accuracy of each population (``None`` when too few examples)."""
  u, r = mia_unlearned, mia_retrained
  return {"unlearned": None if u is None else float(u.mean()), "retrained": None if r is None else float(r.mean()),
          "unlearned_per_model": None if u is None else u.tolist()}


def describe_hyperparameters(hp: Mapping[str, Any]) -> str:
  """``preset=kaggle lr=0.001 ...``: scalar hyperparameters as they ran (a recipe is named by the run line)."""
  plain = (bool, int, float, str, tuple, type(None))
  return " ".join(f"{k}={v}" for k, v in hp.items() if isinstance(v, plain)) or "-"


def device_description() -> str:
  """E.g. ``"cpu: 2 cores (x86_64), 1 local device(s), 1 process(es)"`` or ``"gpu: NVIDIA H100 x1"``."""
  import jax
  devices = jax.devices()
  if devices[0].platform == "cpu":
    return f"cpu: {os.cpu_count()} cores ({platform.machine()}), {len(jax.local_devices())} local device(s), " \
           f"{jax.process_count()} process(es)"
  return f"{devices[0].platform}: {devices[0].device_kind} x{len(devices)}"
