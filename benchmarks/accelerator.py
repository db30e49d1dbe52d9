"""One prepared accelerator run: every GPU number the project needs, within nine minutes.

Command (on a machine with JAX for CUDA, flax, optax, numpy and scipy; this package
need not be installed, it runs from the source tree; no network, no
tensorflow-datasets, scikit-learn, matplotlib or pillow needed)::

  python benchmarks/accelerator.py --out DIR            # one H100: < 9 min, compilation included
  python benchmarks/accelerator.py --out DIR --quick    # the same code on the CPU, tiny sizes (< 1 min)

Parts, in order of value, each on its own time budget (``--budget a=60,b=270,...``
in seconds; every part also stops at ``--total-budget`` from the start). A
measurement that would not finish within what is left of its part's budget is
not started: it is recorded as ``"status": "skipped"`` with a note, and so is a
part with no time left. Results are written as they come, so a run cut short
still leaves everything it measured:

* ``DIR/results.jsonl``: one JSON object per measurement: ``part``, ``name``,
  ``status`` (``ok``, ``skipped`` or ``error``), ``elapsed_s`` (since the start),
  ``config``, ``results``, ``note``;
* ``DIR/log.txt``: the same as readable lines (also printed);
* ``DIR/summary.md``: the tables and the verdicts against the targets (at the end).

Parts:

0. ``device`` (first, free): device description, platform, jax/jaxlib versions,
   device memory, the source tree in use, the run's sizes.
a. ``metric``: forgetting quality (:func:`unlearn_jax.metrics.forgetting_metric`)
   on 512 x 512 x 5,000 (target < 10 s) and 512 x 512 x 144 confidences, first call
   (compilation included) and steady state, at the library's chunk size and a larger one.
b. ``ladder``: training throughput of the competition's ResNet-18 (``resnet18``,
   competition recipe, batch 64, 32x32x3 random images, 10 classes), timed by
   ``benchmarks/bench_train_throughput.py``'s ``bench_model`` (steady-state
   models·epochs/s with an epoch of 5,000 examples, MFU from XLA's cost analysis
   against the datasheet peak, memory per seed from the compiled program's memory
   analysis). In order: the per-seed loop (XLA convolutions, float32); vmapped
   chunks of 8 seeds for {gemm, xla} x {float32, bfloat16}; the fastest of those at
   chunks of 32, 128, 512 while they fit in memory; the loop in that lowering and
   dtype; the other lowering at the chosen chunk.
c. ``end_to_end``: the protocol's stages (:mod:`unlearn_jax.protocol.run`: original,
   N retrained, N unlearned with ``finetune``, metric, simple MIA when scikit-learn
   is installed) on ``random_cifar10`` (random CIFAR-10-shaped data: 45,000 retain,
   5,000 forget) with the chunk, lowering and dtype chosen in part b, N = 2 chunks,
   1 training epoch and 1 fine-tuning epoch; the stage times are extrapolated to
   N = 512, 30 epochs, 5 fine-tuning epochs on 45,000 examples (the formula is printed
   and recorded).
d. ``choice``: the strategy (loop or chunk size), lowering and dtype that part b
   measured fastest, the engine's current defaults on this backend, and the table
   rows to add (``tuning.DEFAULT_STRATEGY``, ``models.DEFAULT_CONV_IMPL``); then the
   verdicts against the targets (vmapped >= 10x the loop; 512 ResNet-18 x 30 epochs
   < 1 h; the metric at 512 x 512 x 5,000 < 10 s).

JAX's persistent compilation cache is on (``--compile-cache DIR``, default
``~/.cache/unlearn_jax/jax-compilation``): a rerun on the same machine skips most
compilation. ``--no-compile-cache`` turns it off.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)  # the source tree, not an installed copy

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import bench_train_throughput as btt  # noqa: E402  (its bench_model, MFU and memory)
from unlearn_jax import compile_cache, tuning  # noqa: E402
from unlearn_jax.data import synthetic  # noqa: E402
from unlearn_jax.protocol import context as protocol_context  # noqa: E402
from unlearn_jax.protocol import stages  # noqa: E402
from unlearn_jax.protocol.config import EvalConfig  # noqa: E402
from unlearn_jax.results.progress import Progress  # noqa: E402
from unlearn_jax.results.record import device_description  # noqa: E402
from unlearn_jax.models import default_conv_impl  # noqa: E402
from unlearn_jax.training import steps_per_epoch  # noqa: E402

PARTS = ("a", "b", "c", "d")
TITLES = {"a": "metric", "b": "ladder", "c": "end_to_end", "d": "choice"}
TARGET_EXAMPLES, TARGET_MODELS, TARGET_EPOCHS, TARGET_FT_EPOCHS = 45_000, 512, 30, 5


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Everything that differs between the accelerator run and ``--quick``."""

  budgets: dict  # part -> seconds
  total_budget: float
  metric_models: int
  metric_examples: tuple  # largest first
  metric_chunks: tuple  # the library's default chunk first
  model: str
  image_shape: tuple
  combos: tuple  # (conv_impl, dtype) pairs timed at the first chunk, in order
  steps: int  # training steps per timed call
  repeats: int
  loop_seeds: int
  first_chunk: int
  ladder: tuple  # chunk sizes after the first
  first_estimate_s: float  # guess for a measurement before any was made
  memory_fraction: float
  e2e_model: str
  e2e_train: int  # training examples of the synthetic data (90% retain, 10% forget)
  e2e_test: int
  e2e_max_chunk: int


FULL = Sizes(budgets={"a": 60, "b": 270, "c": 150, "d": 15}, total_budget=510, metric_models=512,
             metric_examples=(5000, 144), metric_chunks=(4, 64), model="resnet18", image_shape=(32, 32, 3),
             combos=(("xla", "float32"), ("gemm", "float32"), ("xla", "bfloat16"), ("gemm", "bfloat16")), steps=10,
             repeats=3,
             loop_seeds=2, first_chunk=8, ladder=(32, 128, 512), first_estimate_s=45.0, memory_fraction=0.8,
             e2e_model="resnet18", e2e_train=50_000, e2e_test=10_000, e2e_max_chunk=64)
# Both lowerings and both dtypes, a ladder rung and every stage, each compiled once, on the
# smallest models (the end-to-end part trains an MLP: the stages' code does not depend on the model).
QUICK = Sizes(budgets={"a": 10, "b": 25, "c": 15, "d": 5}, total_budget=55, metric_models=4,
              metric_examples=(64, 16), metric_chunks=(4,), model="tiny_cnn", image_shape=(8, 8, 3),
              combos=(("xla", "float32"), ("gemm", "bfloat16")), steps=2, repeats=1, loop_seeds=2, first_chunk=2,
              ladder=(4,), first_estimate_s=2.0, memory_fraction=0.8, e2e_model="tiny_mlp", e2e_train=640,
              e2e_test=160, e2e_max_chunk=2)


class Recorder:
  """Appends one flushed JSON line per measurement and one log line per event."""

  def __init__(self, out_dir: str, clock: Callable[[], float] = time.perf_counter):
    os.makedirs(out_dir, exist_ok=True)
    self.out_dir = out_dir
    self.clock = clock
    self.t0 = clock()
    self._jsonl = open(os.path.join(out_dir, "results.jsonl"), "a")
    self._log = open(os.path.join(out_dir, "log.txt"), "a")
    self.records: list[dict[str, Any]] = []

  def elapsed(self) -> float:
    return self.clock() - self.t0

  def log(self, text: str) -> None:
    line = f"[{self.elapsed():7.1f} s] {text}"
    print(line, flush=True)
    self._log.write(line + "\n")
    self._log.flush()

  def record(self, part: str, name: str, status: str = "ok", config: Optional[dict] = None,
             results: Optional[dict] = None, note: str = "") -> dict[str, Any]:
    rec = {"part": part, "name": name, "status": status, "elapsed_s": round(self.elapsed(), 2),
           "config": config or {}, "results": results or {}, "note": note}
    self._jsonl.write(json.dumps(rec, default=_json_default) + "\n")
    self._jsonl.flush()
    os.fsync(self._jsonl.fileno())
    self.records.append(rec)
    self.log(f"{part}/{name}: {status}" + (f" ({note})" if note else "") + _brief(results or {}))
    return rec

  def close(self) -> None:
    self._jsonl.close()
    self._log.close()


def _json_default(v: Any) -> Any:
  if isinstance(v, (np.integer, np.floating)):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  return repr(v)


def _brief(results: dict) -> str:
  keys = [k for k in ("model_epochs_per_s", "vs_loop", "mfu", "mb_per_seed", "steady_s", "first_s", "wall_s",
                      "total_s") if k in results]
  return "".join(f"; {k} {results[k]:.4g}" for k in keys if isinstance(results[k], (int, float)))


class Budget:
  """Seconds left to one part: its own allowance, capped by the run's deadline."""

  def __init__(self, seconds: float, deadline: float, clock: Callable[[], float] = time.perf_counter):
    self.clock = clock
    self.end = min(clock() + seconds, deadline)

  def left(self) -> float:
    return self.end - self.clock()


def measure(rec: Recorder, budget: Budget, part: str, name: str, estimate_s: float, config: dict,
            fn: Callable[[], dict]) -> Optional[dict]:
  """Runs ``fn`` and records its results, or records a skip if ``estimate_s`` exceeds the budget left."""
  left = budget.left()
  if estimate_s > left:
    rec.record(part, name, "skipped", config, note=f"budget: {max(left, 0):.0f} s left, needs about {estimate_s:.0f} s")
    return None
  t0 = time.perf_counter()
  results = fn()
  results.setdefault("wall_s", time.perf_counter() - t0)
  rec.record(part, name, "ok", config, results)
  return results


# ------------------------------------------------------------------ part a: the metric


def part_metric(rec: Recorder, budget: Budget, sizes: Sizes, state: dict) -> None:
  from unlearn_jax.metrics import forgetting_metric

  n = sizes.metric_models
  rng = np.random.default_rng(0)
  e_max = max(sizes.metric_examples)
  retrained = rng.normal(0.0, 1.0, size=(n, e_max))
  unlearned = rng.normal(0.3, 1.1, size=(n, e_max))
  per_example: dict[int, float] = {}  # chunk -> seconds per example (steady), for estimates
  for chunk in sizes.metric_chunks:
    for e in sizes.metric_examples:
      guess = per_example.get(chunk, max(per_example.values(), default=None))
      estimate = 2 * e * guess + 2 if guess is not None else sizes.first_estimate_s

      def run(e=e, chunk=chunk):
        u, r = unlearned[:, :e], retrained[:, :e]
        t0 = time.perf_counter()
        first = forgetting_metric(u, r, chunk_size=chunk)
        first_s = time.perf_counter() - t0
        steady_s = first_s
        if budget.left() > first_s:
          t0 = time.perf_counter()
          steady = forgetting_metric(u, r, chunk_size=chunk)
          steady_s = time.perf_counter() - t0
          assert np.array_equal(steady.epsilons, first.epsilons)
        return {"first_s": first_s, "steady_s": steady_s, "ms_per_example": 1e3 * steady_s / e,
                "forgetting_quality": float(first.forgetting_quality)}

      res = measure(rec, budget, "a", f"metric {n}x{n}x{e} chunk {chunk}", estimate,
                    {"num_models": n, "examples": e, "chunk_size": chunk}, run)
      if res is not None:
        per_example[chunk] = res["steady_s"] / e
        if e == e_max:
          state.setdefault("metric_full_s", {})[chunk] = res["steady_s"]
          state["metric_full_size"] = f"{n} x {n} x {e}"


# ------------------------------------------------------------------ part b: the seed-axis ladder


@dataclasses.dataclass
class Rung:
  conv_impl: str
  dtype: str
  chunk: int  # 1: the per-seed loop
  row: dict


def part_ladder(rec: Recorder, budget: Budget, sizes: Sizes, state: dict) -> None:
  model = sizes.model
  data = tuning.random_split_data(sizes.image_shape, 10, sizes.steps * btt.BATCH)
  capacity, cap_label = tuning.device_capacity()
  flops: dict[str, float] = {}
  peaks: dict[str, tuple[float, str]] = {}
  rungs: list[Rung] = state.setdefault("rungs", [])
  slowest = {"compile_s": sizes.first_estimate_s, "call_s_per_seed": 0.0}

  def estimate(conv_impl: str, dtype: str, chunk: int) -> float:
    """Compilation (the slowest so far, plus the cost-analysis program for a new dtype) and the timed calls,
    at the per-seed call time of this lowering and dtype's vmapped rungs (else the slowest seen)."""
    extra = 0.0 if dtype in flops else slowest["compile_s"]
    same = [r.row["median_s"] / r.row["seeds"] for r in rungs
            if (r.conv_impl, r.dtype) == (conv_impl, dtype) and r.chunk > 1]
    per_seed = min(same) if same and chunk > 1 else slowest["call_s_per_seed"]
    return slowest["compile_s"] * 1.2 + extra + (sizes.repeats + 1) * per_seed * max(chunk, sizes.loop_seeds)

  def run(conv_impl: str, dtype: str, chunk: int) -> Optional[Rung]:
    label = "loop" if chunk == 1 else f"chunk{chunk}"
    name = f"{model} {conv_impl} {dtype} {label}"
    config = {"model": model, "image_shape": sizes.image_shape, "conv_impl": conv_impl, "dtype": dtype, "strategy": label,
              "seeds": sizes.loop_seeds if chunk == 1 else chunk, "steps": sizes.steps, "batch": btt.BATCH}
    same = [r for r in rungs if r.conv_impl == conv_impl and r.dtype == dtype and r.chunk > 1]
    if chunk > 1 and same:
      per_seed = max(r.row["bytes_per_seed"] for r in same)
      if math.isfinite(per_seed) and chunk * per_seed > sizes.memory_fraction * capacity:
        rec.record("b", name, "skipped", config, note=f"exceeds memory: {chunk} x {per_seed / 2**20:.0f} MB/seed > "
                                                       f"{sizes.memory_fraction:.0%} of {capacity / 2**30:.1f} GiB")
        return None

    def go() -> dict:
      if dtype not in flops:
        flops[dtype] = btt.model_step_flops(model, dtype, data)
        peaks[dtype] = btt.peak_flops(dtype)
      peak, peak_src = peaks[dtype]
      seeds_n, strategy = (sizes.loop_seeds, "loop") if chunk == 1 else (chunk, "vmap")
      row = btt.bench_model(model, conv_impl, dtype, seeds_n, sizes.steps, [strategy], sizes.repeats, data,
                            flops[dtype], peak, capacity)[0]
      loop = next((r.row for r in rungs if r.chunk == 1 and r.conv_impl == conv_impl and r.dtype == dtype), None)
      base = loop or next((r.row for r in rungs if r.chunk == 1), None)
      call_s = row["median_s"]
      if chunk == 1:
        base = row
      return {"model_epochs_per_s": row["model_epochs_per_s"], "mfu": row["mfu"],
              "vs_loop": row["model_epochs_per_s"] / base["model_epochs_per_s"] if base else float("nan"),
              "vs_loop_of": (f"{base['conv_impl']} {base['dtype']}" if base else None),
              "mb_per_seed": row["bytes_per_seed"] / 2**20, "seeds_fit": row["seeds_fit"],
              "compile_s": row["compile_s"], "first_s": row["first_s"], "median_s": call_s, "min_s": row["min_s"],
              "seed_step_ms": 1e3 * call_s / (seeds_n * sizes.steps), "gflop_per_step": row["flops_per_step"] / 1e9,
              "achieved_tflops": row["achieved_flops"] / 1e12, "peak_tflops": peak / 1e12, "peak_source": peak_src,
              "capacity": cap_label, "_row": row}

    try:
      res = measure(rec, budget, "b", name, estimate(conv_impl, dtype, chunk), config, go)
    except Exception as err:  # noqa: BLE001 - running out of memory ends the ladder, not the run
      if not tuning.is_oom(err):
        raise
      rec.record("b", name, "skipped", config, note="out of memory")
      return None
    if res is None:
      return None
    row = res.pop("_row")
    slowest["compile_s"] = max(slowest["compile_s"] if rungs else 0.0, res["compile_s"])
    slowest["call_s_per_seed"] = max(slowest["call_s_per_seed"], res["median_s"] / config["seeds"])
    rung = Rung(conv_impl, dtype, chunk, row)
    rungs.append(rung)
    return rung

  run(*sizes.combos[0], 1)
  first = [r for r in (run(c, d, sizes.first_chunk) for c, d in sizes.combos) if r is not None]
  if not first:
    return
  best = max(first, key=lambda r: r.row["model_epochs_per_s"])
  for k in sizes.ladder:
    if run(best.conv_impl, best.dtype, k) is None:
      break
  if (best.conv_impl, best.dtype) != sizes.combos[0]:
    run(best.conv_impl, best.dtype, 1)
  chosen = choose(rungs)
  if chosen is not None and chosen[2] != sizes.first_chunk:
    other = "gemm" if chosen[0] == "xla" else "xla"
    run(other, chosen[1], chosen[2])


def choose(rungs: list[Rung]) -> Optional[tuple[str, str, int, float]]:
  """``(conv_impl, dtype, chunk, models·epochs/s)``: the fastest lowering and dtype, then the smallest
  chunk within 5% of its fastest chunk (:func:`unlearn_jax.tuning.choose`); ``None`` if nothing ran."""
  ran = [r for r in rungs if math.isfinite(r.row["model_epochs_per_s"])]
  if not ran:
    return None
  top = max(ran, key=lambda r: r.row["model_epochs_per_s"])
  same = [r for r in ran if (r.conv_impl, r.dtype) == (top.conv_impl, top.dtype)]
  trials = [tuning.Trial(chunk=r.chunk, seed_step_s=1.0 / r.row["model_epochs_per_s"]) for r in same]
  chunk = tuning.choose(trials)
  rate = next(r.row["model_epochs_per_s"] for r in same if r.chunk == chunk)
  return top.conv_impl, top.dtype, chunk, rate


# ------------------------------------------------------------------ part c: end to end


class _ChunkTimes(Progress):
  """Keeps each stage's chunk completion times (and logs the pipeline's lines)."""

  def __init__(self, rec: Recorder):
    super().__init__(enabled=False)
    self.rec = rec
    self.times: dict[str, list[tuple[int, float]]] = {}

  def line(self, text: str) -> None:
    self.rec.log(f"  {text}")

  def chunk(self, stage: str, done: int, total: int, computed: int, elapsed: float) -> None:
    self.times.setdefault(stage, []).append((computed, elapsed))
    self.rec.log(f"  [{stage}] models {done}/{total} after {elapsed:.1f} s")


def _first_and_steady(times: list[tuple[int, float]]) -> tuple[float, float]:
  """``(first chunk s, steady chunk s)``: the last chunk's time is the steady one (after compilation)."""
  first = times[0][1]
  steady = times[-1][1] - times[-2][1] if len(times) > 1 else first
  return first, steady


def part_end_to_end(rec: Recorder, budget: Budget, sizes: Sizes, state: dict) -> None:
  chosen = state.get("choice")
  if chosen is not None:
    conv_impl, dtype, chunk, rate = chosen
    source = "part b"
  else:
    conv_impl, dtype, chunk, rate = "gemm", "float32", sizes.first_chunk, float("nan")
    source = "fallback (part b measured nothing)"
  chunk = max(1, min(chunk, sizes.e2e_max_chunk))
  num_models = max(2, 2 * chunk)
  name = f"random_cifar10_{sizes.e2e_train}"
  synthetic.SYNTHETIC.setdefault(name, functools.partial(synthetic.random_cifar10, num_train=sizes.e2e_train,
                                                         num_test=sizes.e2e_test))
  with tempfile.TemporaryDirectory() as tmp:
    config = EvalConfig(
        dataset=name, model=sizes.e2e_model, recipe="competition", recipe_overrides=(("epochs", 1),),
        method="finetune", hyperparameters=(("epochs", 1),), num_models=num_models,
        strategy="loop" if chunk == 1 else "chunked", chunk_size=chunk, conv_impl=conv_impl, dtype=dtype,
        cache_dir=os.path.join(tmp, "cache"), output_dir=os.path.join(tmp, "out"), cache_params=False,
        compile_cache=False)
    cfg = {"dataset": name, "model": sizes.e2e_model, "recipe": "competition", "epochs": 1, "method": "finetune",
           "method_epochs": 1, "num_models": num_models, "chunk": chunk, "conv_impl": conv_impl, "dtype": dtype,
           "choice_from": source}
    progress = _ChunkTimes(rec)
    walls: dict[str, float] = {}

    def stage(key: str, estimate: float, fn: Callable[[], Any]) -> Any:
      out = {}

      def go():
        t0 = time.perf_counter()
        out["value"] = fn()
        walls[key] = time.perf_counter() - t0
        res = {"wall_s": walls[key]}
        if key in progress.times:
          first, steady = _first_and_steady(progress.times[key])
          res.update(first_chunk_s=first, steady_chunk_s=steady, chunks=len(progress.times[key]))
        return res

      if measure(rec, budget, "c", key, estimate, cfg, go) is None:
        raise _Stop()
      return out["value"]

    try:
      ctx = stage("load", 5.0, lambda: protocol_context.build_context(config, progress))
      sizes_c = {s: int(ctx.data.split(s).shape[0]) for s in ("retain", "forget", "validation", "test")}
      cfg["set_sizes"] = sizes_c
      root = jax.random.key(config.seed)
      guess = sizes.first_estimate_s
      original = stage("original", guess, lambda: stages.original_model(
          ctx, jax.random.fold_in(root, stages.STREAM_ORIGINAL), progress))
      per_chunk = chunk * sizes_c["retain"] / btt.EPOCH_EXAMPLES / rate if rate == rate else walls["original"]
      retrained = stage("retrained", walls["original"] + 2 * per_chunk, lambda: stages.retrained_models(
          ctx, jax.random.fold_in(root, stages.STREAM_RETRAIN), progress)).outputs
      method = protocol_context.build_method(ctx)
      unlearned = stage("unlearn", walls["retrained"], lambda: stages.unlearned_models(
          ctx, method, original, jax.random.fold_in(root, stages.STREAM_UNLEARN), progress)).outputs
      from unlearn_jax import metrics
      stage("metric", 5.0, lambda: metrics.forgetting_metric(unlearned["forget_confidence"],
                                                             retrained["forget_confidence"]).forgetting_quality)
      try:
        import sklearn  # noqa: F401  (the simple MIA's splits come from scikit-learn)
      except ImportError:
        rec.record("c", "mia", "skipped", cfg, note="scikit-learn is not installed")
      else:
        stage("mia", 5.0, lambda: (metrics.simple_mia(unlearned["forget_loss"], unlearned["test_loss"]),
                                    metrics.simple_mia(retrained["forget_loss"], retrained["test_loss"])))
    except _Stop:
      pass
    extrapolate(rec, cfg, walls, progress.times, state, chunk)


class _Stop(Exception):
  """A stage was skipped: the later stages need it."""


def extrapolate(rec: Recorder, cfg: dict, walls: dict, times: dict, state: dict, chunk: int) -> None:
  """Records the stage times scaled to N = 512, 30 epochs, 5 fine-tuning epochs on 45,000 examples."""
  if "set_sizes" not in cfg or "retrained" not in times:
    rec.record("c", "extrapolation", "skipped", cfg, note="needs the retrained stage")
    return
  retain = cfg["set_sizes"]["retain"]
  n_chunks = math.ceil(TARGET_MODELS / chunk)
  ex = TARGET_EXAMPLES / retain
  lines, total = [], 0.0

  def add(label: str, formula: str, value: float):
    nonlocal total
    total += value
    lines.append(f"{label} = {formula} = {value:.0f} s")

  # The original model's single chunk mixes compilation and training: take the retrained
  # stage's compilation time (a program of the same size) as its compilation.
  first_r, steady_r = _first_and_steady(times["retrained"])
  compile_o = min(max(first_r - steady_r, 0.0), walls["original"])
  add("original", f"{compile_o:.1f} s (compilation, as retrained) + ({walls['original']:.1f} - {compile_o:.1f}) s x "
                  f"{TARGET_EPOCHS} epochs x {ex:.3g} (examples)",
      compile_o + (walls["original"] - compile_o) * TARGET_EPOCHS * ex)
  for key, epochs in (("retrained", TARGET_EPOCHS), ("unlearn", TARGET_FT_EPOCHS)):
    if key not in times:
      continue
    first, steady = _first_and_steady(times[key])
    compile_s = max(first - steady, 0.0)
    add(key, f"{compile_s:.1f} s (first chunk - steady chunk) + {n_chunks} chunks x {steady:.2f} s x {epochs} "
             f"epochs x {ex:.3g} (examples)", compile_s + n_chunks * steady * epochs * ex)
  metric_full = state.get("metric_full_s", {})
  if metric_full:
    add("metric", f"part a's steady {state['metric_full_size']}", metric_full.get(4, min(metric_full.values())))
  elif "metric" in walls:
    add("metric", f"{walls['metric']:.1f} s x (512 / {cfg['num_models']})^2 (upper bound)",
        walls["metric"] * (TARGET_MODELS / cfg["num_models"]) ** 2)
  for line in lines:
    rec.log("  " + line)
  rec.record("c", "extrapolation", "ok", cfg,
             {"total_s": total, "total_h": total / 3600, "formula": lines, "chunks_of": chunk,
              "target_models": TARGET_MODELS, "target_epochs": TARGET_EPOCHS, "target_examples": TARGET_EXAMPLES},
             note="measured at 1 epoch: per-chunk time includes the per-model evaluation, so the epoch scaling "
                  "slightly overestimates")
  state["extrapolated_s"] = total


# ------------------------------------------------------------------ part d: the choice


def part_choice(rec: Recorder, budget: Budget, sizes: Sizes, state: dict) -> None:
  del budget
  chosen = state.get("choice")
  backend = jax.default_backend()
  current = {"strategy_table": tuning.default_strategy(sizes.model), "conv_impl_table": default_conv_impl(),
             "family": tuning.model_family(sizes.model)}
  if chosen is None:
    rec.record("d", "choice", "skipped", current, note="part b measured nothing to choose from")
  else:
    conv_impl, dtype, chunk, rate = chosen
    row = ("loop", 1) if chunk == 1 else ("chunked", chunk)
    rec.record("d", "choice", "ok", current,
               {"conv_impl": conv_impl, "dtype": dtype, "chunk": chunk, "model_epochs_per_s": rate,
                "DEFAULT_STRATEGY": f"({backend!r}, {tuning.model_family(sizes.model)!r}): {row!r}",
                "DEFAULT_CONV_IMPL": f"{backend!r}: {conv_impl!r}"})
  verdicts(rec, state)


def verdicts(rec: Recorder, state: dict) -> None:
  rungs = state.get("rungs", [])
  out: dict[str, Any] = {}
  loops = {(r.conv_impl, r.dtype): r.row["model_epochs_per_s"] for r in rungs if r.chunk == 1}
  best_vmap = max((r for r in rungs if r.chunk > 1), key=lambda r: r.row["model_epochs_per_s"], default=None)
  if loops and best_vmap is not None:
    loop = loops.get((best_vmap.conv_impl, best_vmap.dtype), max(loops.values()))
    ratio = best_vmap.row["model_epochs_per_s"] / loop
    out["vmap_vs_loop"] = {"ratio": ratio, "target": 10, "met": ratio >= 10,
                           "vmap": f"{best_vmap.conv_impl} {best_vmap.dtype} chunk{best_vmap.chunk}"}
  if "extrapolated_s" in state:
    out["512x30_epochs_h"] = {"hours": state["extrapolated_s"] / 3600, "target": 1,
                              "met": state["extrapolated_s"] < 3600}
  full = state.get("metric_full_s", {})
  if full:
    out["metric_s"] = {"size": state["metric_full_size"], "seconds": full.get(4, min(full.values())), "target": 10,
                                    "met": full.get(4, min(full.values())) < 10, "by_chunk": full}
  rec.record("d", "targets", "ok" if out else "skipped", results=out,
             note="" if out else "nothing measured to compare against the targets")


# ------------------------------------------------------------------ driver


def describe(sizes: Sizes, args) -> dict[str, Any]:
  import jaxlib
  import unlearn_jax

  dev = jax.devices()[0]
  capacity, cap_label = tuning.device_capacity()
  return {"device": device_description(), "platform": dev.platform, "device_kind": dev.device_kind,
          "num_devices": len(jax.devices()), "memory_gib": capacity / 2**30, "memory_source": cap_label,
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
          "host": f"{os.cpu_count()} cores ({platform.machine()})", "source": os.path.dirname(unlearn_jax.__file__),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "quick": bool(args.quick), "compile_cache": args.compile_cache_dir,
          "sizes": dataclasses.asdict(sizes), "argv": sys.argv[1:]}


def parse_budgets(text: Optional[str], base: dict) -> dict:
  out = dict(base)
  for item in (text or "").split(","):
    if not item.strip():
      continue
    part, _, value = item.partition("=")
    if part.strip() not in PARTS or not value:
      raise SystemExit(f"accelerator.py: --budget expects PART=SECONDS with PART in {','.join(PARTS)}, got {item!r}")
    out[part.strip()] = float(value)
  return out


RUNNERS = {"a": part_metric, "b": part_ladder, "c": part_end_to_end, "d": part_choice}


def summary_markdown(rec: Recorder) -> str:
  lines = ["| part | measurement | status | key numbers | note |", "|---|---|---|---|---|"]
  for r in rec.records:
    res = {k: v for k, v in r["results"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    keys = [k for k in ("model_epochs_per_s", "vs_loop", "mfu", "mb_per_seed", "first_s", "steady_s", "wall_s",
                        "total_s") if k in res]
    nums = ", ".join(f"{k} {res[k]:.4g}" for k in keys)
    if r["part"] == "d":
      nums = json.dumps(r["results"], default=_json_default).replace("|", "/")
    lines.append(f"| {r['part']} | {r['name']} | {r['status']} | {nums} | {r['note']} |")
  extrapolation = [r for r in rec.records if r["name"] == "extrapolation" and r["status"] == "ok"]
  if extrapolation:
    lines += ["", "Extrapolation to N = 512, 30 epochs, 45,000 examples:", ""]
    lines += [f"    {line}" for line in extrapolation[-1]["results"]["formula"]]
    lines.append(f"    total = {extrapolation[-1]['results']['total_s']:.0f} s")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  start = time.perf_counter()
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="directory for results.jsonl, log.txt and summary.md")
  p.add_argument("--quick", action="store_true", help="the same code paths on tiny sizes (CPU, < 1 min)")
  p.add_argument("--parts", default=",".join(PARTS), help="comma list of parts to run (a,b,c,d)")
  p.add_argument("--budget", default=None, help="per-part seconds, e.g. a=60,b=270,c=150,d=15")
  p.add_argument("--total-budget", type=float, default=None, help="seconds for the whole run (default 510; quick 55)")
  p.add_argument("--compile-cache", dest="compile_cache_dir", default=compile_cache.default_dir(),
                 help="JAX persistent compilation cache directory")
  p.add_argument("--no-compile-cache", dest="compile_cache_dir", action="store_const", const=None)
  args = p.parse_args(argv)
  sizes = QUICK if args.quick else FULL
  sizes = dataclasses.replace(sizes, budgets=parse_budgets(args.budget, sizes.budgets))
  if args.total_budget is not None:
    sizes = dataclasses.replace(sizes, total_budget=args.total_budget)
  parts = [x.strip() for x in args.parts.split(",") if x.strip()]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise SystemExit(f"accelerator.py: unknown part(s) {unknown}; expected some of {','.join(PARTS)}")
  deadline = start + sizes.total_budget
  rec = Recorder(args.out)
  state: dict[str, Any] = {}
  with compile_cache.persistent_cache(args.compile_cache_dir):
    rec.record("0", "device", "ok", results=describe(sizes, args))
    for part in PARTS:
      if part not in parts:
        continue
      # Part d measures nothing (it reads the others' records), so only its own allowance applies.
      budget = Budget(sizes.budgets[part], math.inf if part == "d" else deadline)
      title = TITLES[part]
      if budget.left() <= 0:
        rec.record(part, title, "skipped", note=f"no time left ({sizes.budgets[part]:.0f} s budget, run deadline "
                                                f"{sizes.total_budget:.0f} s)")
      else:
        rec.log(f"part {part} ({title}): budget {budget.left():.0f} s")
        try:
          RUNNERS[part](rec, budget, sizes, state)
        except Exception as err:  # noqa: BLE001 - one failing part must not cost the others
          rec.record(part, title, "error", note=" ".join(f"{type(err).__name__}: {err}".split())[:500])
          rec._log.write(traceback.format_exc())  # pylint: disable=protected-access
      if part == "b":
        state["choice"] = choose(state.get("rungs", []))
  with open(os.path.join(args.out, "summary.md"), "w") as f:
    f.write(summary_markdown(rec))
  rec.log(f"done in {time.perf_counter() - start:.1f} s; results in {args.out}")
  rec.close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
