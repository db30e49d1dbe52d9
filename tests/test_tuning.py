"""Choosing the seed-axis strategy: the measured table, the ladder, the choice, the stored table."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import jax
import numpy as np
import pytest

from tests.helpers import small_digits
from unlearn_jax import seeds, tuning
from unlearn_jax.models import get_model
from unlearn_jax.training import Recipe, make_train_fn

# The cheapest real workload: a 16-unit MLP on 8x8 digits, batch 16.
WORKLOAD = tuning.Workload(model="tiny_mlp", num_classes=10, image_shape=(8, 8, 1), recipe="digits",
                           batch_size=16, conv_impl="gemm", dtype="float32")
FAST = dict(steps=1, repeats=1, min_call_s=0.005)


def _read(path):
  with open(path) as f:
    return json.load(f)


def test_choose_takes_the_smallest_chunk_within_tolerance_of_the_fastest():
  trials = [tuning.Trial(1, 1.00), tuning.Trial(2, 0.52), tuning.Trial(4, 0.50), tuning.Trial(8, 0.60)]
  assert tuning.choose(trials) == 2  # 0.52 <= 1.05 * 0.50
  assert tuning.choose(trials, tolerance=0.01) == 4
  trials.append(tuning.Trial(16, note="exceeds memory"))
  assert tuning.choose(trials, tolerance=0.01) == 4
  with pytest.raises(ValueError, match="no chunk size could be measured"):
    tuning.choose([tuning.Trial(1, note="exceeds memory")])


def test_ladder_doubles_chunks_and_stops_when_a_rung_does_not_pay():
  everything = tuning.measure(WORKLOAD, 4, min_gain=-1e9, **FAST)  # a gain is never required
  assert [t.chunk for t in everything] == [1, 2, 4]
  for t in everything:
    assert t.ran and 0 < t.seed_step_s < 1 and t.bytes_per_seed > 0 and t.compile_s > 0 and t.note == ""
  # Demanding a 99% gain per rung: chunk 2 cannot be 100x faster than the loop, so the ladder stops there.
  assert [t.chunk for t in tuning.measure(WORKLOAD, 64, min_gain=0.99, **FAST)] == [1, 2]


def test_ladder_stops_at_the_memory_budget():
  per_seed = tuning.measure(WORKLOAD, 1, **FAST)[0].bytes_per_seed
  # Room for 1.5 seeds in half the capacity: chunk 1 runs, chunk 2 is not even started.
  trials = tuning.measure(WORKLOAD, 8, min_gain=-1e9, capacity=3 * per_seed, memory_fraction=0.5, **FAST)
  assert [(t.chunk, t.note) for t in trials] == [(1, ""), (2, "exceeds memory")]
  assert trials[0].ran and not trials[1].ran and math.isnan(trials[1].seed_step_s)
  assert tuning.choose(trials) == 1
  nothing = tuning.measure(WORKLOAD, 8, capacity=1.0, **FAST)
  assert [(t.chunk, t.note) for t in nothing] == [(1, "exceeds memory")]


def test_choice_is_stored_per_workload_and_reused(tmp_path, monkeypatch):
  path = str(tmp_path / "strategies.json")
  chunk = tuning.tuned_chunk(WORKLOAD, 4, path=path, log=lambda line: None, **FAST)
  table = _read(path)
  entry = table[WORKLOAD.cache_key()]
  assert entry["chunk"] == chunk and entry["max_chunk"] == 4
  ran = {t["chunk"]: t["seed_step_s"] for t in entry["trials"] if math.isfinite(t["seed_step_s"])}
  assert chunk in ran and ran[chunk] <= 1.05 * min(ran.values())
  assert "tiny_mlp" in WORKLOAD.cache_key() and jax.__version__ in WORKLOAD.cache_key()

  def no_measuring(*args, **kwargs):
    raise AssertionError("measured although a stored choice exists")

  monkeypatch.setattr(tuning, "measure", no_measuring)
  tuning._MEMO.clear()
  assert tuning.tuned_chunk(WORKLOAD, 4, path=path) == chunk  # read back from the file
  other = dataclasses.replace(WORKLOAD, dtype="bfloat16")
  with pytest.raises(AssertionError, match="measured although"):
    tuning.tuned_chunk(other, 4, path=path)  # another workload has no stored choice
  with pytest.raises(AssertionError, match="measured although"):
    tuning.tuned_chunk(WORKLOAD, 4, path=path, retune=True)


def test_larger_seed_counts_remeasure_only_if_the_ladder_was_cut_short(tmp_path, monkeypatch):
  path = str(tmp_path / "strategies.json")
  calls = []
  real = tuning.measure

  def counting(*args, **kwargs):
    calls.append(args[1])
    return real(*args, **kwargs)

  monkeypatch.setattr(tuning, "measure", counting)
  tuning.tuned_chunk(WORKLOAD, 1, path=path, log=lambda line: None, min_gain=-1e9, **FAST)  # reaches its top
  tuning._MEMO.clear()
  tuning.tuned_chunk(WORKLOAD, 4, path=path, log=lambda line: None, min_gain=-1e9, **FAST)
  assert calls == [1, 4]
  tuning._MEMO.clear()
  assert tuning.tuned_chunk(WORKLOAD, 2, path=path) <= 2 and calls == [1, 4]  # 4 covers 2
  with open(path, "w") as f:
    f.write("{not json")
  tuning._MEMO.clear()
  tuning.tuned_chunk(WORKLOAD, 1, path=path, log=lambda line: None, **FAST)  # unreadable file: measure again
  assert calls == [1, 4, 1] and WORKLOAD.cache_key() in _read(path)


def test_resolve_strategy_uses_the_table_then_the_measurement(tmp_path, monkeypatch):
  monkeypatch.setenv("UNLEARN_JAX_TUNE_FILE", str(tmp_path / "strategies.json"))
  tuning._MEMO.clear()
  assert tuning.resolve_strategy("auto", None, "mlp") == (*tuning.DEFAULT_STRATEGY[("cpu", "dense")],
                                                         "measured table (cpu)")
  assert tuning.resolve_strategy("auto", 3, "mlp") == ("chunked", 3, "measured table (cpu), chunk size given")
  assert tuning.resolve_strategy("loop", None, "mlp") == ("loop", None, "given")
  with pytest.raises(ValueError, match="'tune' needs a workload"):
    tuning.resolve_strategy("tune", None, "mlp")
  tuned = tuning.resolve_strategy("tune", None, "tiny_mlp", WORKLOAD, max_chunk=2)
  assert tuned[2] == "tuned on this device" and tuned[:2] in (("loop", 1), ("chunked", 2))
  # A backend without a measured row: "auto" measures when it has a workload, else falls back.
  monkeypatch.setattr(tuning, "DEFAULT_STRATEGY", {})
  assert tuning.resolve_strategy("auto", None, "tiny_mlp", WORKLOAD, max_chunk=2) == tuned  # stored choice
  assert tuning.resolve_strategy("auto", None, "mlp") == (*tuning.FALLBACK_STRATEGY, "fallback (unmeasured backend)")
  assert tuning.resolve_strategy("auto", 3, "mlp", WORKLOAD) == ("chunked", 3, "given")


def test_tuned_runner_gives_the_models_of_the_loop(tmp_path, monkeypatch):
  monkeypatch.setenv("UNLEARN_JAX_TUNE_FILE", str(tmp_path / "strategies.json"))
  monkeypatch.setattr(tuning, "DEFAULT_STRATEGY", {})
  tuning._MEMO.clear()
  data = small_digits(n_retain=48, n_forget=8, n_val=8)
  recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, epochs=2, batch_size=16, schedule="constant",
                  loss="ce")
  fn = make_train_fn(get_model("tiny_mlp", 10), recipe, split="retain")
  keys = seeds.seed_keys(jax.random.key(3), 5)
  tuned = tuning.seed_runner(fn, "auto", model_name="tiny_mlp", workload=WORKLOAD, num_seeds=2)
  assert tuned.source == "tuned on this device"
  out, ref = tuned(keys, data), seeds.SeedRunner(fn, "loop")(keys, data)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_tune_command_prints_the_ladder_and_stores_the_choice(tmp_path, monkeypatch, capsys):
  from unlearn_jax import cli

  path = tmp_path / "strategies.json"
  monkeypatch.setenv("UNLEARN_JAX_TUNE_FILE", str(path))
  tuning._MEMO.clear()
  args = ["tune", "--model", "tiny_mlp", "--image-shape", "8,8,1", "--recipe", "digits", "--batch-size", "16",
          "--max-chunk", "2", "--steps", "1"]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  key = dataclasses.replace(WORKLOAD, batch_size=16).cache_key()
  assert key in out and "(chosen)" in out and key in _read(path)
  assert f"chunk size {_read(path)[key]['chunk']} stored" in out
  for bad, message in ((["--image-shape", "8,8"], "three positive integers"), (["--model", "nope"], "unknown model"),
                       (["--max-chunk", "0"], "--max-chunk must be >= 1")):
    assert cli.main(["tune", *bad]) == 2
    assert message in capsys.readouterr().err


def test_conv_impl_auto_uses_the_table_or_times_both_lowerings(tmp_path, monkeypatch):
  from unlearn_jax import models

  path = tmp_path / "strategies.json"
  monkeypatch.setenv("UNLEARN_JAX_TUNE_FILE", str(path))
  tuning._MEMO.clear()
  conv = dataclasses.replace(WORKLOAD, model="tiny_cnn")
  assert tuning.resolve_conv_impl("auto", conv) == ("gemm", "measured table (cpu)")
  assert tuning.resolve_conv_impl("xla", conv) == ("xla", "given")
  with pytest.raises(ValueError, match="unknown conv impl 'cudnn'"):
    tuning.resolve_conv_impl("cudnn", conv)
  monkeypatch.setattr(models, "DEFAULT_CONV_IMPL", {})
  assert tuning.resolve_conv_impl("auto", WORKLOAD) == ("gemm", "no convolutions")  # an MLP: nothing to time
  impl, source = tuning.resolve_conv_impl("auto", conv, max_chunk=2)
  assert source == "tuned on this device"
  stored = _read(path)
  entry = stored[dataclasses.replace(conv, conv_impl="auto").cache_key()]
  times = entry["seed_step_s"]
  assert entry["conv_impl"] == impl and all(0 < t < 1 for t in times.values())
  assert impl == ("xla" if times["xla"] < 0.95 * times["gemm"] else "gemm")
  gemm_ladder = stored[dataclasses.replace(conv, conv_impl="gemm").cache_key()]
  assert entry["chunk"] == gemm_ladder["chunk"]  # XLA's lowering was timed at the GEMM ladder's choice
  with open(path, "w") as f:  # a stored choice is reused without measuring
    json.dump({dataclasses.replace(conv, conv_impl="auto").cache_key(): {"conv_impl": "xla"}}, f)
  assert tuning.resolve_conv_impl("auto", conv, max_chunk=2) == ("xla", "tuned on this device")


def test_other_processes_wait_for_the_measuring_process_choice(tmp_path):
  import threading

  from unlearn_jax.protocol import context as protocol_context
  from unlearn_jax.protocol.config import EvalConfig

  path = str(tmp_path / "shared.json")
  tuning._MEMO.clear()
  with pytest.raises(TimeoutError, match="no tuned choice"):
    tuning.tuned_chunk(WORKLOAD, 8, path=path, measure_here=False, wait_s=0.3, log=lambda line: None)
  conv_key = dataclasses.replace(WORKLOAD, conv_impl="auto").cache_key()

  def measuring_process():  # stores its choices a moment later, as process 0 does after measuring
    time.sleep(0.5)
    tuning._store_choice(path, WORKLOAD.cache_key(), {"chunk": 16, "max_chunk": 8, "stopped_early": True})
    tuning._store_choice(path, conv_key, {"conv_impl": "xla"})

  thread = threading.Thread(target=measuring_process)
  thread.start()
  try:
    assert tuning.tuned_chunk(WORKLOAD, 8, path=path, measure_here=False, wait_s=30, log=lambda line: None) == 8
    assert tuning.tuned_conv_impl(WORKLOAD, 8, path=path, measure_here=False, wait_s=30) == "xla"
  finally:
    thread.join()
  single = EvalConfig(cache_dir=str(tmp_path))
  assert protocol_context.tune_options(single) == {}
  for index in (0, 1):
    opts = protocol_context.tune_options(dataclasses.replace(single, process_index=index, process_count=2))
    assert opts == dict(path=str(tmp_path / "tuned-strategies.json"), measure_here=index == 0,
                        wait_s=single.wait_timeout_s)


def test_auto_strategy_comes_from_the_table():
  strategy, chunk = tuning.default_strategy("resnet18", "cpu")
  assert (strategy, chunk) == tuning.DEFAULT_STRATEGY[("cpu", "conv")]
  runner = tuning.seed_runner(lambda k: k, "auto", model_name="mlp")
  assert runner.strategy in seeds.RUN_STRATEGIES and runner.strategy != "auto"
  assert (runner.strategy, runner.chunk_size) == tuning.DEFAULT_STRATEGY[("cpu", "dense")]
  assert runner.source == "measured table (cpu)"


def test_plan_strategy_shards_auto_over_several_devices():
  table = tuning.DEFAULT_STRATEGY[("cpu", "dense")]
  assert tuning.plan_strategy("auto", None, "mlp", num_seeds=64, num_devices=1) == (*table, "measured table (cpu)")
  assert tuning.plan_strategy("auto", None, "mlp", num_seeds=64, num_devices=4) == (
      "shard", 4 * table[1], "measured table (cpu); sharded over 4 devices")
  assert tuning.plan_strategy("auto", 10, "mlp", num_seeds=64, num_devices=4)[:2] == ("shard", 10)  # total given
  assert tuning.plan_strategy("loop", None, "mlp", num_seeds=64, num_devices=4) == ("loop", None, "given")
