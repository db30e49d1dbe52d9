"""The ceiling: F of ``retrain`` as the method, scored against the reference already in memory.

:func:`unlearn_jax.protocol.run.ceiling_of` must reach the number the previous computation
reached on the same cache: evaluating ``retrain`` (default hyperparameters, its own
unlearning seed stream) as the method through the public path, which scores N more
retrained models against the N reference ones and records the same ceiling file. It must
do so without loading the data or training the original or retrained models again.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import unlearn_jax
from unlearn_jax import checkpoint, configs
from unlearn_jax.metrics import forgetting_quality
from unlearn_jax.protocol import config as protocol_config
from unlearn_jax.protocol import context as protocol_context
from unlearn_jax.protocol import run as protocol_run
from unlearn_jax.protocol import stages
from unlearn_jax.results import ceiling
from unlearn_jax.results.progress import Progress

N = 4
# F_ceiling of this setup (tiny config, N = 4, seed 0) as the code before the protocol was split computed
# it (``evaluate --config tiny --num-models 4 --with-ceiling`` of that version, CPU backend): 53 / 192.
PREVIOUS_RELEASE_F_CEILING = 0.2760416666666667


def _config(cache, out, **changes):
  cfg = configs.load_config("tiny")
  cfg.update(num_models=N, cache_dir=cache, output_dir=out, **changes)
  return protocol_config.from_dict(cfg)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  base = tmp_path_factory.mktemp("ceiling")
  config = _config(str(base / "cache"), str(base / "out"))
  ctx = protocol_context.build_context(config)
  return protocol_run.prepare(ctx, Progress(enabled=False)), base


def test_ceiling_from_the_reference_in_memory_equals_retrain_evaluated_as_the_method(reference, monkeypatch):
  ref, base = reference
  path = ceiling.ceiling_path(ref.retrained.directory, N)
  assert not os.path.exists(path)

  def forbidden(*args, **kwargs):
    raise AssertionError("the ceiling must not reload the data nor retrain the reference")

  calls = []
  real_unlearned = stages.unlearned_models
  monkeypatch.setattr(protocol_run, "build_context", forbidden)
  monkeypatch.setattr(protocol_context, "load_data", forbidden)
  monkeypatch.setattr(stages, "original_model", forbidden)
  monkeypatch.setattr(stages, "retrained_models", forbidden)
  monkeypatch.setattr(stages, "unlearned_models", lambda *a, **k: calls.append(a[1].name) or real_unlearned(*a, **k))
  stored = protocol_run.ceiling_of(ref, Progress(enabled=False))
  monkeypatch.undo()
  assert calls == ["retrain"]
  with open(path) as f:
    in_memory = json.load(f)
  assert stored["forgetting_quality"] == in_memory["forgetting_quality"] > 0

  # a naive recomputation from the stored extra models' confidences
  chunks = in_memory["unlearned_chunks"]
  files = sorted(f for f in os.listdir(chunks) if f.startswith("chunk-"))
  conf = np.concatenate([checkpoint.load_arrays(os.path.join(chunks, f))[0]["out/forget_confidence"] for f in files])
  assert conf.shape[0] == N
  assert in_memory["forgetting_quality"] == pytest.approx(
      forgetting_quality(conf, ref.retrained.outputs["forget_confidence"]), abs=1e-12)

  # the previous computation on the same cache: retrain evaluated as the method (its own chunks, fresh)
  os.remove(path)
  cfg = dict(config="tiny", cache_dir=str(base / "cache"), verbose=False)
  record = unlearn_jax.evaluate("digits", "retrain", N, output_dir=str(base / "retrain"), **cfg)
  assert record["cache"]["retrained"] == ref.retrained.directory
  assert record["cache"]["unlearned"] != chunks  # computed again, not read from the ceiling's chunks
  with open(path) as f:
    previous = json.load(f)
  assert previous["forgetting_quality"] == record["forgetting_quality"] == in_memory["forgetting_quality"]
  assert previous["final_score"] == in_memory["final_score"]
  assert in_memory["forgetting_quality"] == pytest.approx(PREVIOUS_RELEASE_F_CEILING, abs=1e-12)


def test_a_stored_ceiling_is_read_not_recomputed(reference, monkeypatch):
  ref, base = reference
  if ceiling.read(ref.retrained.directory, N) is None:
    protocol_run.ceiling_of(ref, Progress(enabled=False))
  stored = ceiling.read(ref.retrained.directory, N)
  monkeypatch.setattr(stages, "unlearned_models", lambda *a, **k: pytest.fail("recomputed a stored ceiling"))
  assert protocol_run.ceiling_of(ref, Progress(enabled=False)) == stored


def test_only_default_retrain_on_its_own_stream_records_the_ceiling(reference):
  ref, base = reference
  path = ceiling.ceiling_path(ref.retrained.directory, N)
  if os.path.exists(path):
    os.remove(path)
  # retrain on another unlearning seed stream is not the ceiling
  method = protocol_context.build_method(ref.ctx.replace_config(method="retrain", hyperparameters=()))
  protocol_run.evaluate_on(ref, method, Progress(enabled=False), output_dir=str(base / "stream"), unlearn_seed=7)
  assert not os.path.exists(path)
  method = protocol_context.build_method(ref.ctx.replace_config(method="retrain", hyperparameters=()))
  evaluation = protocol_run.evaluate_on(ref, method, Progress(enabled=False), output_dir=str(base / "default"))
  with open(path) as f:
    assert json.load(f)["forgetting_quality"] == evaluation.record["forgetting_quality"]


def test_after_dropped_seeds_the_ceiling_is_rescored_on_the_kept_seeds(reference):
  ref, base = reference
  if ceiling.read(ref.retrained.directory, N) is None:
    protocol_run.ceiling_of(ref, Progress(enabled=False))
  stored = ceiling.read(ref.retrained.directory, N)
  keep = np.array([0, 2, 3])
  retrained = {k: v[keep] for k, v in ref.retrained.outputs.items()}
  at = protocol_run.ceiling_at(stored, keep, retrained)
  chunks = stored["unlearned_chunks"]
  files = sorted(f for f in os.listdir(chunks) if f.startswith("chunk-"))
  conf = np.concatenate([checkpoint.load_arrays(os.path.join(chunks, f))[0]["out/forget_confidence"] for f in files])
  assert at["forgetting_quality"] == pytest.approx(forgetting_quality(conf[keep], retrained["forget_confidence"]),
                                                   abs=1e-12)
  assert at["num_models"] == 3 and at["subsampled_from"] == N
  summary = ceiling.summary(0.05, at)
  assert summary["num_models"] == 3 and summary["ratio"] == pytest.approx(0.05 / at["forgetting_quality"])
  # a result scored after dropping seeds is never divided by a ceiling at another N
  assert ceiling.of_results({"forgetting_quality": 0.05, "num_models": N, "dropped_seeds": [1],
                             "cache": {"retrained": ref.retrained.directory}}) is None
  assert ceiling.of_results({"forgetting_quality": 0.05, "num_models": N, "dropped_seeds": [],
                             "cache": {"retrained": ref.retrained.directory}})["num_models"] == N
  # the ceiling's models gone: no ceiling rather than one at the wrong N
  assert protocol_run.ceiling_at(dict(stored, unlearned_chunks=str(base / "gone")), keep, retrained) is None


def _ceiling_confidences(stored):
  chunks = stored["unlearned_chunks"]
  files = sorted(f for f in os.listdir(chunks) if f.startswith("chunk-"))
  return np.concatenate([checkpoint.load_arrays(os.path.join(chunks, f))[0]["out/forget_confidence"] for f in files])


def test_with_bootstrap_the_ceiling_has_its_own_interval_and_klom_its_retrain_baseline(reference):
  """The ceiling's interval: the model bootstrap of its own models against the reference, recomputed by a
  loop over explicitly resampled arrays; KLOM's baseline: KLOM of the ceiling's models against the reference."""
  import dataclasses
  from unlearn_jax.metrics.klom import klom, klom_summary
  ref, base = reference
  if ceiling.read(ref.retrained.directory, N) is None:
    protocol_run.ceiling_of(ref, Progress(enabled=False))
  stored = ceiling.read(ref.retrained.directory, N)
  conf, retrained = _ceiling_confidences(stored), ref.retrained.outputs["forget_confidence"]
  np.testing.assert_array_equal(protocol_run.ceiling_outputs(stored)["forget_confidence"], conf)
  draws = 12
  asked = dataclasses.replace(ref, ctx=ref.ctx.replace_config(bootstrap=draws, metrics=("competition", "klom")))
  method = protocol_context.build_method(asked.ctx.replace_config(method="retrain", hyperparameters=()))
  record = protocol_run.evaluate_on(asked, method, Progress(enabled=False), output_dir=None, unlearn_seed=7).record
  got = record["ceiling"]["interval"]
  rng = np.random.default_rng(asked.ctx.config.seed)  # model_bootstrap's documented draws
  u_idx, r_idx = rng.integers(0, N, (draws, N)), rng.integers(0, N, (draws, N))
  values = np.array([forgetting_quality(conf[u], retrained[r]) for u, r in zip(u_idx, r_idx)])
  point = forgetting_quality(conf, retrained)
  assert got["point"] == pytest.approx(point, abs=1e-12) == record["ceiling"]["forgetting_quality"]
  bias = values.mean() - point
  assert [got["lo"], got["hi"]] == pytest.approx(list(np.percentile(values, [2.5, 97.5]) - bias), abs=1e-9)
  want = klom_summary(klom(conf, retrained))
  assert record["klom_baseline"]["forget"]["mean"] == pytest.approx(want["mean"], abs=1e-12)
  assert record["klom_baseline"]["forget"]["p95"] == pytest.approx(want["p95"], abs=1e-12)
  # without --bootstrap the ceiling keeps its point only; without klom there is no baseline
  plain = protocol_run.evaluate_on(ref, method, Progress(enabled=False), output_dir=None, unlearn_seed=7).record
  assert "interval" not in plain["ceiling"] and "klom_baseline" not in plain
