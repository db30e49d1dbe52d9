"""Margins of every model on fixed retain and held-out subsets (what KLOM reads beyond the forget set).

The margin of a model on example ``x`` is its logit-scaled confidence of the true label
(the competition's confidence, :func:`unlearn_jax.metrics.logit_scaled_confidence`), so on
the forget set the margins are the forget confidences every evaluation already records.
KLOM also compares the two populations on retain and held-out (test) examples; those are
measured on a fixed random subset of each split (default 1,000 examples, or all if fewer),
drawn from the split seed alone, so every method of one setup is measured on the same
examples.

Caching: the unlearning stage records the margins when asked (the subset is part of its
chunk key). The retrained models' outputs were usually cached without margins, so they
are measured in a separate pass from the cached retrained parameters (``cache_params``,
on by default), chunk by chunk through the shared stage runner, into
``retrained-margins-<key>/`` beside the retrained store; the key is the retrained store's
plus the subset.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from unlearn_jax import checkpoint
from unlearn_jax.metrics import logit_scaled_confidence
from unlearn_jax.protocol import runner
from unlearn_jax.results.progress import Progress
from unlearn_jax.training import make_predict_fn

MARGIN_SPLITS = ("retain", "heldout")  # heldout: the test split
DEFAULT_MARGIN_EXAMPLES = 1000
_SUBSET_STREAM = 0x4B4C4F4D  # a constant mixed into the split seed: the subsets' own random stream


def subset_indices(data, split_seed: int, count: int = DEFAULT_MARGIN_EXAMPLES) -> dict[str, np.ndarray]:
  """Dataset indices of the fixed margin subsets: ``{"retain": [M_r], "heldout": [M_h]}`` (sorted).

  ``min(count, split size)`` examples of the retain and of the test split, drawn from
  ``split_seed`` only (never the method or the model seed).
  """
  if int(count) != count or count < 1:
    raise ValueError(f"the number of margin examples must be an integer >= 1, got {count}")
  rng = np.random.default_rng([int(split_seed), _SUBSET_STREAM])
  out = {}
  for name, idx in (("retain", data.retain), ("heldout", data.test)):
    idx = np.asarray(idx)
    k = min(int(count), idx.shape[0])
    out[name] = np.sort(idx[rng.choice(idx.shape[0], size=k, replace=False)]).astype(np.int32)
  return out


def subset_digest(subsets: Mapping[str, np.ndarray]) -> str:
  """A short digest of the subsets (part of every cache key that stores margins)."""
  h = hashlib.sha256()
  for name in MARGIN_SPLITS:
    h.update(name.encode())
    h.update(np.ascontiguousarray(subsets[name], np.int64).tobytes())
  return h.hexdigest()[:16]


def margin_outputs(predict: Callable, params, batch_stats, data, subsets: Mapping[str, Any]) -> dict[str, jax.Array]:
  """``{"<split>_margin": [M]}`` of one model (traced; ``predict`` from :func:`make_predict_fn`)."""
  out = {}
  for name in MARGIN_SPLITS:
    idx = jax.numpy.asarray(subsets[name])
    logits = predict(params, batch_stats, data, idx)
    out[f"{name}_margin"] = logit_scaled_confidence(logits, data.labels[idx]).astype(jax.numpy.float32)
  return out


def retrained_margins(model, data, retrained: runner.StageOutput, subsets: Mapping[str, np.ndarray],
                      key_parts: Mapping[str, Any], config, progress: Optional[Progress] = None) -> runner.StageOutput:
  """Margins of the cached retrained models, measured from their cached parameters (cached per chunk).

  Runs through the shared chunked runner (:func:`unlearn_jax.protocol.runner.run_chunks`) on
  exactly the chunks of the retrained store ``retrained`` (its stage output): reused where
  stored, shared over processes, corrupt entries rebuilt and reported. ``key_parts`` are the
  retrained store's key parts; ``config`` gives the run options. Returns the stage output
  whose arrays are ``{"<split>_margin": [N, M]}``.

  Raises:
    ValueError: when the retrained store holds no parameters (``cache_params`` was off).
  """
  parts = dict(key_parts, kind="retrained-margins", subsets=subset_digest(subsets),
               sizes={k: int(v.shape[0]) for k, v in subsets.items()})
  root = os.path.dirname(os.path.abspath(retrained.directory))
  store = checkpoint.ChunkStore(os.path.join(root, f"retrained-margins-{checkpoint.cache_key(parts)}"),
                                checkpoint.describe(parts))
  source = checkpoint.ChunkStore(retrained.directory)
  num = int(np.asarray(retrained.arrays["retain_accuracy"]).shape[0])
  ranges, _ = runner.chunk_plan(source, num, num)
  predict = make_predict_fn(model)
  fn = jax.jit(jax.vmap(lambda p, b, d: margin_outputs(predict, p, b, d, subsets), in_axes=(0, 0, None)))

  def compute(lo: int, hi: int) -> dict[str, np.ndarray]:
    src = source.load(lo, hi)
    if src is None or not any(k.startswith("params/") for k in src):
      raise ValueError(f"KLOM needs the retrained models' parameters, but the cache entry for seeds {lo}-{hi} in "
                       f"{retrained.directory} has none (cache_params was off); evaluate with cache_params=true and a "
                       f"fresh cache directory")
    params = checkpoint.unflatten_tree(src, "params/")
    stats = checkpoint.unflatten_tree(src, "batch_stats/")
    return {k: np.asarray(v) for k, v in fn(params, stats, data).items()}

  out = runner.run_chunks("margins", store, num, compute, lambda: runner.fixed_plan(store, ranges),
                          process_index=config.process_index, process_count=config.process_count,
                          wait_timeout_s=config.wait_timeout_s, progress=progress)
  if out.computed and progress is not None:
    progress.line(f"[margins] measured {out.computed} retrained models on {len(subsets['retain'])} retain and "
                  f"{len(subsets['heldout'])} held-out examples into {store.directory}")
  return out
