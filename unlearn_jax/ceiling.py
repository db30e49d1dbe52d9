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
setup then finds it through ``results["cache"]["retrained"]``.
"""

from __future__ import annotations

import dataclasses
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


def is_ceiling_run(config, results: Mapping[str, Any]) -> bool:
  """Whether ``results`` is ``retrain`` as the method: default hyperparameters and unlearning seed stream,
  every seed scored."""
  own_stream = config.unlearn_seed in (None, config.seed)  # the default fold_in(root, UNLEARN)
  return (config.method == CEILING_METHOD and not dict(config.hyperparameters) and own_stream
          and not results.get("dropped_seeds"))


def record(config, results: Mapping[str, Any]) -> Optional[str]:
  """Writes the ceiling file when ``results`` is a ceiling run (see :func:`is_ceiling_run`); returns its path."""
  if not is_ceiling_run(config, results):
    return None
  path = ceiling_path(results["cache"]["retrained"], config.num_models)
  payload = {"forgetting_quality": float(results["forgetting_quality"]), "final_score": float(results["final_score"]),
             "num_models": int(config.num_models), "seed": int(config.seed),
             "unlearned_chunks": results["cache"]["unlearned"]}
  checkpoint.atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
  return path


def read(retrained_dir: Optional[str], num_models: Optional[int]) -> Optional[dict[str, Any]]:
  """The stored ceiling (with its ``path``), or ``None`` when absent or unreadable."""
  if not retrained_dir or num_models is None:
    return None
  path = ceiling_path(retrained_dir, num_models)
  try:
    if os.path.getsize(path) > MAX_FILE_BYTES:
      return None
    with open(path) as f:
      data = json.load(f)
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
  cache, n = results.get("cache"), results.get("num_models")
  retrained_dir = cache.get("retrained") if isinstance(cache, Mapping) else None
  if not isinstance(retrained_dir, str) or not isinstance(n, int) or isinstance(n, bool):
    return None
  stored = read(retrained_dir, n)
  if stored is None:
    return None
  if results.get("dropped_seeds"):  # F at the kept seeds: only a ceiling re-scored at that N compares
    return for_results(results, stored)
  return summary(results["forgetting_quality"], stored)


def for_results(results: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
  """The ceiling summary of ``results`` at the N it was scored with.

  Without dropped seeds, the stored ceiling (N models) as is. After ``--allow-nan-drop``
  kept n < N seeds, F falls with N, so F / F_ceiling at N would flatter the method: the
  ceiling is re-scored at n instead, from the stored ceiling run's models at the kept
  seeds against the same n reference models (``num_models`` n, ``subsampled_from`` N).
  When that run's chunks are gone (or unreadable) the ratio is ``None`` with a ``note``.
  """
  dropped = list(results.get("dropped_seeds") or [])
  if not dropped:
    return summary(results["forgetting_quality"], stored)
  n_all = int(stored.get("num_models") or results.get("num_models") or 0)
  keep = np.setdiff1d(np.arange(n_all), np.asarray(dropped, np.int64))
  population = _ceiling_population(stored.get("unlearned_chunks"), n_all)
  retrained = (results.get("_arrays") or {}).get("retrained")
  if population is None or retrained is None or len(retrained["forget_confidence"]) != keep.size:
    return {"forgetting_quality": None, "ratio": None, "num_models": keep.size, "path": stored.get("path"),
            "note": f"the ceiling at N={n_all} is not comparable with F at the {keep.size} kept seeds, and its "
                    f"models are not available to re-score at {keep.size}: evaluate --method retrain again"}
  from unlearn_jax import pipeline
  scores = pipeline.score({k: v[keep] for k, v in population.items()}, retrained)
  at_kept = {"forgetting_quality": scores["forgetting_quality"], "num_models": int(keep.size),
             "path": stored.get("path")}
  return summary(results["forgetting_quality"], at_kept) | {"subsampled_from": n_all}


def _ceiling_population(chunks_dir: Any, num_models: int) -> Optional[dict[str, np.ndarray]]:
  """The stored ceiling run's measured outputs ``[num_models, ...]`` from its chunks (``None`` if incomplete)."""
  from unlearn_jax import pipeline
  if not isinstance(chunks_dir, str) or not os.path.isdir(chunks_dir) or num_models < 2:
    return None
  store = checkpoint.ChunkStore(chunks_dir)
  reused, missing = pipeline._plan(store, num_models, num_models)
  if missing:
    return None
  parts = [store.load(lo, hi) for lo, hi in reused]
  if any(p is None for p in parts):
    return None
  outputs = pipeline._split_outputs({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
  if any(name not in outputs for name in pipeline.OUTPUT_NAMES) or pipeline.nonfinite_seeds(outputs).size:
    return None
  return outputs


def summary(forgetting_quality: float, ceiling: Mapping[str, Any]) -> dict[str, Any]:
  """``{"forgetting_quality": F_ceiling, "ratio": F / F_ceiling (None when F_ceiling = 0), "num_models", "path"}``."""
  fc = float(ceiling["forgetting_quality"])
  return {"forgetting_quality": fc, "ratio": float(forgetting_quality) / fc if fc > 0 else None,
          "num_models": ceiling.get("num_models"), "path": ceiling.get("path")}


def compute(config, retrained_dir: str, progress) -> dict[str, Any]:
  """Evaluates ``retrain`` as the method on ``config``'s setup (chunks under the retrained cache) and records it.

  Reuses the cached original and retrained models; only the N extra retrained models
  (and the metric) cost time, once per setup and N.
  """
  from unlearn_jax import pipeline
  sub = dataclasses.replace(config, method=CEILING_METHOD, hyperparameters=(), metrics=("competition",),
                            allow_nan_drop=False, unlearn_seed=None, output_dir=os.path.join(retrained_dir, "ceiling"))
  progress.line(f"[ceiling] evaluating {CEILING_METHOD} as the method (N={config.num_models}) for the ceiling")
  results = pipeline.evaluate(sub, progress)
  if os.path.abspath(results["cache"]["retrained"]) != os.path.abspath(retrained_dir):
    raise pipeline.ProtocolError(f"the ceiling run used retrained models from {results['cache']['retrained']}, "
                                 f"not {retrained_dir}")
  record(sub, results)
  stored = read(retrained_dir, config.num_models)
  if stored is None:
    raise pipeline.ProtocolError(f"could not read back the ceiling file {ceiling_path(retrained_dir, config.num_models)}")
  return stored
