"""``benchmarks/accelerator.py``: the prepared GPU run, exercised by its ``--quick`` CPU mode.

The quick run goes through every part's code (the metric, the ladder through
``bench_train_throughput.bench_model``, the protocol's stages, the choice) on tiny
sizes, in a fresh process that cannot import what the accelerator machine lacks
(tensorflow-datasets, TensorFlow, scikit-learn, matplotlib, pillow, torch) and runs
from outside the repository, as the script must on a machine where the package is
not installed. The budgets are generous here so that every part measures
something even on a loaded CPU; skipping is checked separately. The persistent
compilation cache (in a fresh directory) is on, as in a real run: the ladder's
identical initialisation programs then compile once.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "accelerator.py")
BLOCKED = ("tensorflow_datasets", "tensorflow", "sklearn", "matplotlib", "PIL", "torch")

# argv: blocked names, the script, its arguments. ``sys.modules[name] = None`` is how Python
# spells "not installed": ``import name`` raises ModuleNotFoundError and
# ``importlib.util.find_spec(name)`` returns None (as libraries probing for optional
# packages expect).
_BLOCKING_RUNNER = """
import runpy, sys
for name in sys.argv[1].split(","):
  sys.modules[name] = None
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _records(out_dir):
  with open(os.path.join(out_dir, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  base = tmp_path_factory.mktemp("accelerator")
  out = base / "out"
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(base / "xdg"))
  proc = subprocess.run(
      [sys.executable, "-c", _BLOCKING_RUNNER, ",".join(BLOCKED), SCRIPT, "--quick", "--out", str(out),
       "--budget", "a=120,b=300,c=300", "--total-budget", "900"],  # compilation cache under XDG_CACHE_HOME
      cwd=str(base), env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return out, _records(out), proc.stdout


def test_every_part_records_parseable_measurements(quick):
  out, records, stdout = quick
  by_part = {}
  for r in records:
    assert set(r) == {"part", "name", "status", "elapsed_s", "config", "results", "note"}
    assert r["status"] in ("ok", "skipped"), r  # no part failed
    by_part.setdefault(r["part"], []).append(r)
  assert set(by_part) == {"0", "a", "b", "c", "d"}
  for part in ("a", "b", "c", "d"):
    assert any(r["status"] == "ok" for r in by_part[part]), part
  device = by_part["0"][0]["results"]
  assert device["platform"] == "cpu" and device["quick"] is True
  assert device["compile_cache"] == os.path.join(str(out.parent), "xdg", "unlearn_jax", "jax-compilation")
  assert os.listdir(device["compile_cache"])
  assert device["source"] == os.path.join(REPO, "unlearn_jax")  # the source tree, not an installed copy
  elapsed = [r["elapsed_s"] for r in records]
  assert elapsed == sorted(elapsed)  # written as they happened
  with open(os.path.join(out, "log.txt")) as f:
    log = f.read()
  for r in records:
    assert f"{r['part']}/{r['name']}: {r['status']}" in log
  with open(os.path.join(out, "summary.md")) as f:
    summary = f.read()
  assert summary.count("\n| ") == len(records) and "    total = " in summary


def test_metric_part_times_both_sizes(quick):
  _, records, _ = quick
  metric = {r["name"]: r for r in records if r["part"] == "a" and r["status"] == "ok"}
  assert {"metric 4x4x64 chunk 4", "metric 4x4x16 chunk 4"} <= set(metric)
  for r in metric.values():
    res = r["results"]
    assert 0 < res["steady_s"] and 0 < res["first_s"] and 0 <= res["forgetting_quality"] <= 1
    assert res["ms_per_example"] == pytest.approx(1e3 * res["steady_s"] / r["config"]["examples"])


def test_ladder_rows_come_from_the_throughput_benchmark_and_feed_the_choice(quick):
  _, records, _ = quick
  ladder = [r for r in records if r["part"] == "b" and r["status"] == "ok"]
  strategies = {(r["config"]["conv_impl"], r["config"]["dtype"], r["config"]["strategy"]) for r in ladder}
  assert {("xla", "float32", "loop"), ("xla", "float32", "chunk2"), ("gemm", "bfloat16", "chunk2")} <= strategies
  for r in ladder:
    res = r["results"]
    seeds = r["config"]["seeds"]
    # models·epochs/s from the call time: seeds x steps per call, 79 steps to the 5,000-example epoch
    assert res["model_epochs_per_s"] == pytest.approx(seeds * r["config"]["steps"] / res["median_s"] / 79)
    assert res["mfu"] > 0 and res["mb_per_seed"] > 0 and res["gflop_per_step"] > 0
    if r["config"]["strategy"] == "loop":
      assert res["vs_loop"] == 1.0
  rates = {(r["config"]["conv_impl"], r["config"]["dtype"], r["config"]["strategy"]): r["results"]["model_epochs_per_s"]
           for r in ladder}
  choice = next(r for r in records if r["part"] == "d" and r["name"] == "choice")
  assert choice["status"] == "ok"
  c = choice["results"]
  label = "loop" if c["chunk"] == 1 else f"chunk{c['chunk']}"
  assert c["model_epochs_per_s"] == rates[(c["conv_impl"], c["dtype"], label)]
  fastest = max(rates.values())
  assert c["model_epochs_per_s"] >= fastest / 1.05 - 1e-12  # the smallest chunk within 5% of the fastest


def test_end_to_end_stages_and_extrapolation(quick):
  _, records, _ = quick
  e2e = {r["name"]: r for r in records if r["part"] == "c"}
  for stage in ("load", "original", "retrained", "unlearn", "metric"):
    assert e2e[stage]["status"] == "ok", stage
  assert e2e["mia"]["status"] == "skipped" and "scikit-learn" in e2e["mia"]["note"]
  retrained = e2e["retrained"]["results"]
  assert retrained["chunks"] == 2 and retrained["first_chunk_s"] >= retrained["steady_chunk_s"] > 0
  ex = e2e["extrapolation"]
  assert ex["status"] == "ok" and ex["results"]["target_models"] == 512
  res = ex["results"]
  terms = [float(line.rsplit("=", 1)[1].strip().rstrip(" s")) for line in res["formula"]]
  assert res["total_s"] == pytest.approx(sum(terms), rel=1e-2, abs=len(terms))
  chunk = e2e["retrained"]["config"]["chunk"]
  steady, compile_s = retrained["steady_chunk_s"], retrained["first_chunk_s"] - retrained["steady_chunk_s"]
  retain = e2e["retrained"]["config"]["set_sizes"]["retain"]
  expect = compile_s + math.ceil(512 / chunk) * steady * 30 * 45_000 / retain
  line = next(line for line in res["formula"] if line.startswith("retrained"))
  assert float(line.rsplit("=", 1)[1].strip().rstrip(" s")) == pytest.approx(expect, rel=1e-2, abs=1)


def test_spent_budgets_give_skipped_records(tmp_path):
  from benchmarks import accelerator

  out = tmp_path / "out"
  assert accelerator.main(["--quick", "--out", str(out), "--parts", "c,d", "--budget", "c=0",
                           "--no-compile-cache"]) == 0
  records = _records(out)
  assert [(r["part"], r["name"], r["status"]) for r in records] == [
      ("0", "device", "ok"), ("c", "end_to_end", "skipped"), ("d", "choice", "skipped"), ("d", "targets", "skipped")]
  assert "no time left" in records[1]["note"]

  clock = iter([0.0, 0.0, 8.0, 8.0, 20.0]).__next__
  budget = accelerator.Budget(10.0, math.inf, clock=clock)  # created at t = 0
  rec = accelerator.Recorder(str(tmp_path / "m"))
  calls = []
  ok = accelerator.measure(rec, budget, "x", "fits", 5.0, {}, lambda: calls.append(1) or {"v": 1.0})  # 10 s left
  skipped = accelerator.measure(rec, budget, "x", "too long", 5.0, {}, lambda: calls.append(2) or {})  # 2 s left
  rec.close()
  assert ok["v"] == 1.0 and skipped is None and calls == [1]
  status = [(r["name"], r["status"]) for r in _records(tmp_path / "m")]
  assert status == [("fits", "ok"), ("too long", "skipped")]
  assert "2 s left, needs about 5 s" in _records(tmp_path / "m")[1]["note"]
