"""The stages of the protocol, each a pure per-seed JAX function run over the seed axis, cached per chunk:

* :func:`original_model`: one model trained on the train split, key ``fold_in(fold_in(root, ORIGINAL), 0)``;
* :func:`retrained_models`: N models trained on the retain split, seed ``i`` keyed
  ``fold_in(fold_in(root, RETRAIN), i)``;
* :func:`unlearned_models`: N unlearning runs from the original, seed ``i`` keyed
  ``fold_in(fold_in(root_u, UNLEARN), i)``;
* :func:`retrained_margins`: the retrained models' margins for KLOM (from their cached parameters).

Each measures its models in the same program that trains them (:func:`make_measure_fn`)
and returns a typed value: :class:`OriginalModel` or :class:`Population`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import checkpoint, plugins
from unlearn_jax.metrics import logit_scaled_confidence
from unlearn_jax.protocol import budget, margins, runner
from unlearn_jax.protocol.context import CACHE_VERSION, BuiltMethod, Context, make_runner
from unlearn_jax.results.progress import Progress
from unlearn_jax.training import accuracy, make_predict_fn, make_train_fn, make_training
from unlearn_jax.training.losses import per_example_cross_entropy
from unlearn_jax.unlearning import ModelState
from unlearn_jax.unlearning import outputs as unlearning_outputs
from unlearn_jax.protocol import original as original_io

STREAM_ORIGINAL, STREAM_RETRAIN, STREAM_UNLEARN = 0, 1, 2
OUTPUT_NAMES = ("retain_accuracy", "forget_accuracy", "test_accuracy", "forget_confidence", "forget_loss",
                "test_loss")


@dataclasses.dataclass(frozen=True)
class OriginalModel:
  """The original model: its state, its measured outputs and its cache entry.

  Attributes:
    state: parameters and BatchNorm statistics.
    outputs: the measurements of :func:`make_measure_fn` (and ``kept_epoch``).
    key: its cache key (part of every unlearning chunk's key).
    directory: its cache folder; cached: whether it was read from there.
    rebuilt: corrupt cache entries found and rebuilt.
  """

  state: ModelState
  outputs: dict[str, np.ndarray]
  key: str
  directory: str
  cached: bool
  rebuilt: list[str]


@dataclasses.dataclass(frozen=True)
class Population:
  """N models' outputs (``[N, ...]`` host arrays) and where they are stored; for unlearning runs also the
  method's own per-seed diagnostics (``UnlearnResult.metrics``, ``[N, ...]``)."""

  outputs: dict[str, np.ndarray]
  directory: str
  rebuilt: list[str]
  diagnostics: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def num_models(self) -> int:
    return int(np.asarray(self.outputs["retain_accuracy"]).shape[0])


def make_measure_fn(model, eval_batch_size: int = 512,
                    margin_subsets: Optional[Mapping[str, np.ndarray]] = None) -> Callable[[Any, Any, Any], dict[str, jax.Array]]:
  """``measure(params, batch_stats, data) -> outputs`` of one model (eval mode).

  Outputs: ``retain_accuracy``, ``forget_accuracy``, ``test_accuracy`` (scalars),
  ``forget_confidence`` ``[F]`` (logit-scaled confidence of the true label),
  ``forget_loss`` ``[F]`` and ``test_loss`` ``[T]`` (per-example cross-entropy); with
  ``margin_subsets`` also ``retain_margin`` and ``heldout_margin`` (:mod:`unlearn_jax.protocol.margins`).
  """
  predict = make_predict_fn(model, eval_batch_size)

  def measure(params, batch_stats, data):
    out = {}
    for split in ("retain", "forget", "test"):
      idx = data.split(split)
      logits = predict(params, batch_stats, data, idx)
      labels = data.labels[idx]
      out[f"{split}_accuracy"] = accuracy(logits, labels)
      if split == "forget":
        out["forget_confidence"] = logit_scaled_confidence(logits, labels).astype(jnp.float32)
        out["forget_loss"] = per_example_cross_entropy(logits, labels)
      elif split == "test":
        out["test_loss"] = per_example_cross_entropy(logits, labels)
    if margin_subsets is not None:
      out.update(margins.margin_outputs(predict, params, batch_stats, data, margin_subsets))
    return out

  return measure


def split_outputs(flat: Mapping[str, np.ndarray], prefix: str = "out/") -> dict[str, np.ndarray]:
  """The measured outputs (``out/...`` entries; or those under ``prefix``) of a stage's flat arrays."""
  return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def original_model(ctx: Context, root: jax.Array, progress: Progress) -> OriginalModel:
  """The original model (cached under ``ctx.config.cache_dir``); ``root``: ``fold_in(root, STREAM_ORIGINAL)``."""
  parts = ctx.key_parts("original")
  key = checkpoint.cache_key(parts)
  store = checkpoint.ChunkStore(os.path.join(ctx.config.cache_dir, f"original-{key}"), checkpoint.describe(parts))
  measure = make_measure_fn(ctx.model)
  arrays = store.load_entry("model")
  cached = arrays is not None
  for err in store.rebuilt:
    progress.line(f"[original] corrupt cache entry rebuilt: {err}")
  given = ctx.given_original
  if arrays is None and given is not None:  # --original: load and measure the given model, no training
    arrays = original_io.measured_arrays(given, ctx.config.model, ctx.model, ctx.data, measure)
    if ctx.config.process_index == 0:
      store.save_entry("model", arrays)
    progress.line(f"[original] given {given.path} ({given.format}, sha256 {given.sha256[:16]}); not trained")
  elif arrays is None:
    t0 = time.perf_counter()
    arrays = checkpoint.flatten_tree(train_original(ctx, jax.random.fold_in(root, 0), measure, progress))
    if ctx.config.process_index == 0:
      store.save_entry("model", arrays)
    progress.line(f"[original] trained 1 model in {time.perf_counter() - t0:.1f} s")
  else:
    progress.line(f"[original] from cache {store.directory}")
  state = ModelState(jax.tree.map(jnp.asarray, checkpoint.unflatten_tree(arrays, "params/")),
                     jax.tree.map(jnp.asarray, checkpoint.unflatten_tree(arrays, "batch_stats/")))
  return OriginalModel(state, split_outputs(arrays), key, store.directory, cached, list(store.rebuilt))


def train_original(ctx: Context, key: jax.Array, measure: Callable[..., Any], progress: Progress) -> dict[str, Any]:
  """The original model trained on the train split, one epoch per call of one compiled program, and measured.

  After each epoch the budget attached to ``progress`` (:mod:`unlearn_jax.protocol.budget`) learns the time of
  an epoch (compilation excluded) and, from the first, states the stage's remaining time and refuses a run over
  ``--max-hours``, so a typo in the epoch count costs one epoch. Returns ``params``, ``batch_stats`` and ``out``
  (the measurements and ``kept_epoch``).
  """
  training = make_training(ctx.model, ctx.recipe, split="train")
  init = jax.jit(training.init)
  one_epoch = jax.jit(training.epochs)

  @jax.jit
  def finish(carry, data, losses, val_accs):
    res = training.finish(carry, losses, val_accs)
    out = dict(measure(res.params, res.batch_stats, data), kept_epoch=res.best_epoch)
    return dict(params=res.params, batch_stats=res.batch_stats, out=out)

  cost = budget.stage(progress, "original", training.num_epochs, unit="epoch")
  carry = init(key, ctx.data)
  losses, val_accs = [], []
  for epoch in range(training.num_epochs):
    carry, (loss, val_acc) = one_epoch(carry, ctx.data, jnp.full((1,), epoch, jnp.int32))
    losses.append(loss)
    val_accs.append(val_acc)
    if cost.budget is not None:
      jax.block_until_ready(loss)  # the epoch's time, not its dispatch
      cost.after_chunk(epoch + 1, epoch + 1)
  return finish(carry, ctx.data, jnp.concatenate(losses), jnp.concatenate(val_accs))


def retrained_models(ctx: Context, root: jax.Array, progress: Progress) -> Population:
  """The N retrained models' outputs (cached per chunk); ``root``: ``fold_in(root, STREAM_RETRAIN)``."""
  parts = ctx.key_parts("retrained")
  store = checkpoint.ChunkStore(os.path.join(ctx.config.cache_dir, f"retrained-{checkpoint.cache_key(parts)}"),
                                checkpoint.describe(parts))
  train = make_train_fn(ctx.model, ctx.recipe, split="retain")
  measure = make_measure_fn(ctx.model)
  keep = ctx.config.cache_params

  def fn(key, data):
    res = train(key, data)
    out = dict(out=measure(res.params, res.batch_stats, data))
    if keep:
      out.update(params=res.params, batch_stats=res.batch_stats)
    return out

  out = runner.seed_chunks("retrained", make_runner(fn, ctx), root, ctx.config.num_models, (ctx.data,), store,
                           checkpoint.flatten_tree, ctx.config, progress)
  return Population(split_outputs(out.arrays), out.directory, out.rebuilt)


def unlearned_store(ctx: Context, method: BuiltMethod, original_key: str,
                    margin_subsets: Optional[Mapping[str, np.ndarray]] = None) -> checkpoint.ChunkStore:
  """Where the unlearning runs of ``method`` are stored (under ``ctx.config.output_dir/chunks``), by their key."""
  m = method.method
  parts = dict(kind="unlearned", version=CACHE_VERSION, original=original_key, method=m.name,
               hyperparameters=dict(m.hyperparameters), num_models=None)
  if margin_subsets is not None:  # keys of runs without margins stay as they were
    parts["margins"] = margins.subset_digest(margin_subsets)
  if ctx.config.unlearn_seed is not None and ctx.config.unlearn_seed != ctx.config.seed:
    parts["unlearn_seed"] = ctx.config.unlearn_seed  # default-seed keys stay as they were
  if method.origin is not None:  # a user's method: its file's contents are part of the key
    parts["origin"] = {"name": method.origin["name"], "sha256": method.origin["sha256"]}
  key = checkpoint.cache_key(parts)
  folder = f"{plugins.safe_name(m.name)}-{key}"
  return checkpoint.ChunkStore(os.path.join(ctx.config.output_dir, "chunks", folder), checkpoint.describe(parts))


def unlearned_models(ctx: Context, method: BuiltMethod, original: OriginalModel, root: jax.Array, progress: Progress,
                     margin_subsets: Optional[Mapping[str, np.ndarray]] = None) -> Population:
  """The N unlearning runs' outputs (stored per chunk for resuming); ``root``: ``fold_in(root_u, STREAM_UNLEARN)``."""
  store = unlearned_store(ctx, method, original.key, margin_subsets)
  measure = make_measure_fn(ctx.model, margin_subsets=margin_subsets)
  unlearn = method.method.unlearn

  name = method.method.name

  def fn(key, original_state, data):
    res = unlearn(original_state, data, key)
    unlearning_outputs.check_result(name, original_state, res)  # at trace time: structure, shapes, dtypes
    return dict(out=measure(res.state.params, res.state.batch_stats, data),
                diag=unlearning_outputs.diagnostics(name, res))

  out = runner.seed_chunks("unlearn", make_runner(fn, ctx), root, ctx.config.num_models, (original.state, ctx.data),
                           store, checkpoint.flatten_tree, ctx.config, progress)
  return Population(split_outputs(out.arrays), out.directory, out.rebuilt, split_outputs(out.arrays, "diag/"))


def retrained_margins(ctx: Context, retrained: Population, subsets: Mapping[str, np.ndarray],
                      progress: Progress) -> Population:
  """The retrained models' margins on ``subsets``: a population of ``{"<split>_margin": [N, M]}`` (cached)."""
  stage = runner.StageOutput(retrained.outputs, retrained.directory, [], 0)
  out = margins.retrained_margins(ctx.model, ctx.data, stage, subsets, ctx.key_parts("retrained"), ctx.config,
                                  progress)
  return Population(out.arrays, out.directory, out.rebuilt)
