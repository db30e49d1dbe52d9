"""KLOM's margins of the retrained models run through the shared chunked stage runner.

They equal a naive per-model recomputation from the cached parameters, follow the
retrained store's chunks, are shared between processes (each computes its own chunks
and reads the other's), and a corrupt entry is rebuilt and reported like any stage's.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import threading

import jax
import numpy as np
import pytest

from unlearn_jax import checkpoint
from unlearn_jax.metrics import logit_scaled_confidence
from unlearn_jax.protocol import context as protocol_context
from unlearn_jax.protocol import margins, run as protocol_run, stages
from unlearn_jax.protocol.config import EvalConfig, Setup
from unlearn_jax.results.progress import Progress
from unlearn_jax.training import make_predict_fn

N, CHUNK, EXAMPLES = 4, 2, 30


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
  base = tmp_path_factory.mktemp("margins")
  config = EvalConfig.compose(Setup(recipe_overrides=(("epochs", 1), ("lr", 3e-3)), num_models=N))
  config = dataclasses.replace(config, strategy="chunked", chunk_size=CHUNK, cache_dir=str(base / "cache"),
                               output_dir=str(base / "out"), compile_cache=False)
  ctx = protocol_context.build_context(config)
  pop = stages.retrained_models(ctx, jax.random.fold_in(jax.random.key(0), stages.STREAM_RETRAIN),
                                Progress(enabled=False))
  subsets = margins.subset_indices(ctx.data, 0, EXAMPLES)
  return ctx, pop, subsets


def _naive(ctx, pop, subsets):
  """Per model and split: load its parameters from the chunk that holds it, predict, take the confidence."""
  predict = make_predict_fn(ctx.model)
  store = checkpoint.ChunkStore(pop.directory)
  out = {f"{split}_margin": [] for split in margins.MARGIN_SPLITS}
  for lo in range(0, N, CHUNK):
    arrays = store.load(lo, lo + CHUNK)
    params = checkpoint.unflatten_tree(arrays, "params/")
    stats = checkpoint.unflatten_tree(arrays, "batch_stats/")
    for i in range(CHUNK):
      p, s = jax.tree.map(lambda a: a[i], params), jax.tree.map(lambda a: a[i], stats)
      for split in margins.MARGIN_SPLITS:
        idx = subsets[split]
        logits = predict(p, s, ctx.data, idx)
        out[f"{split}_margin"].append(np.asarray(logit_scaled_confidence(logits, ctx.data.labels[idx])))
  return {k: np.stack(v) for k, v in out.items()}


def test_margins_equal_a_naive_recomputation_and_follow_the_retrained_chunks(retrained):
  ctx, pop, subsets = retrained
  got = stages.retrained_margins(ctx, pop, subsets, Progress(enabled=False))
  want = _naive(ctx, pop, subsets)
  assert set(got.outputs) == set(want)
  for k in want:
    assert got.outputs[k].shape == (N, EXAMPLES)
    np.testing.assert_allclose(got.outputs[k], want[k], rtol=1e-5, atol=1e-5)
  assert sorted(f for f in os.listdir(got.directory) if f.startswith("chunk-")) == \
      sorted(f for f in os.listdir(pop.directory) if f.startswith("chunk-"))
  assert got.rebuilt == []


def test_margins_are_shared_between_processes(retrained, tmp_path):
  ctx, pop, subsets = retrained
  other_subsets = margins.subset_indices(ctx.data, 1, EXAMPLES)  # a fresh store: nothing cached yet
  results, errors = {}, []

  def process(index):
    try:
      config = dataclasses.replace(ctx.config, process_index=index, process_count=2, wait_timeout_s=600.0)
      stage = margins.runner.StageOutput(pop.outputs, pop.directory, [], 0)
      results[index] = margins.retrained_margins(ctx.model, ctx.data, stage, other_subsets,
                                                 ctx.key_parts("retrained"), config, Progress(enabled=False))
    except BaseException as err:  # reported below
      errors.append(err)

  threads = [threading.Thread(target=process, args=(i,)) for i in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  assert results[0].computed == results[1].computed == CHUNK  # each computed one chunk, read the other's
  for k in results[0].arrays:
    np.testing.assert_array_equal(results[0].arrays[k], results[1].arrays[k])
  want = _naive(ctx, pop, other_subsets)
  for k in want:
    np.testing.assert_allclose(results[0].arrays[k], want[k], rtol=1e-5, atol=1e-5)


def test_a_corrupt_margins_entry_is_rebuilt_and_reported(retrained):
  ctx, pop, subsets = retrained
  clean = stages.retrained_margins(ctx, pop, subsets, Progress(enabled=False))
  pathlib.Path(checkpoint.ChunkStore(clean.directory).path(0, CHUNK)).write_bytes(b"garbage")
  again = stages.retrained_margins(ctx, pop, subsets, Progress(enabled=False))
  assert len(again.rebuilt) == 1
  for k in clean.outputs:
    np.testing.assert_array_equal(again.outputs[k], clean.outputs[k])


def test_a_klom_reference_reports_rebuilt_margins_entries(retrained):
  ctx, pop, subsets = retrained
  klom_ctx = ctx.replace_config(metrics=("competition", "klom"), margin_examples=EXAMPLES)
  ref = protocol_run.prepare(klom_ctx, Progress(enabled=False))
  store = checkpoint.ChunkStore(stages.retrained_margins(ctx, pop, subsets, Progress(enabled=False)).directory)
  assert ref.retrained.outputs["retain_margin"].shape == (N, EXAMPLES)
  pathlib.Path(store.path(CHUNK, N)).write_bytes(b"garbage")
  again = protocol_run.prepare(klom_ctx, Progress(enabled=False))
  assert len(again.rebuilt) == 1 and store.directory in again.rebuilt[0], again.rebuilt
  np.testing.assert_array_equal(again.retrained.outputs["retain_margin"], ref.retrained.outputs["retain_margin"])
