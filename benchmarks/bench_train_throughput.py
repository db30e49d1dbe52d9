"""Training throughput of many seeds: per-seed loop vs vmap vs chunked vmap vs sharding.

Each configuration times steady-state training steps of the competition's
recipe (Adam, coupled weight decay, per-epoch cosine, class-weighted
cross-entropy, batch 64) on random CIFAR-shaped data (32x32x3, 10 classes),
through the engine's own ``run_epoch`` and ``make_train_step``. The per-seed
program ``steps(state, key, data) -> (state, loss)`` runs ``--steps`` batches
in a ``lax.scan``; the strategies are built exactly as
:class:`unlearn_jax.seeds.SeedRunner` builds them:

* ``loop``: ``jit(steps)`` called once per seed;
* ``vmap``: ``jit(vmap(steps))`` over all seeds in one call;
* ``chunk<k>``: the same vmapped program over chunks of ``k`` seeds;
* ``auto``: whichever of these ``tuning.resolve_strategy`` picks for the model
  (the measured table, or on a backend without a row the chunk size that
  :mod:`unlearn_jax.tuning` measures for this workload, stored per machine);
* ``tune``: the chunk size :mod:`unlearn_jax.tuning` measures for this
  workload (on any backend), timed here like the others;
* ``shard``: the vmapped program with the seed axis sharded over all local
  devices (one device on CPU unless run under
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``).

Models are initialised before timing and every program is compiled (and run
once) before the timed repeats; the reported time is the median of
``--repeats`` calls.

Conversion: an epoch is 5,000 examples at batch 64, i.e. ``ceil(5000/64) = 79``
steps, so ``models·epochs/s = seeds * steps / time / 79``.

Memory: ``seeds/device`` is ``0.9 * capacity / bytes_per_seed`` where
``bytes_per_seed`` is the compiled vmapped program's argument + output + temp
bytes (``compiled.memory_analysis()``), less the shared data, divided by its
seed count; capacity is the accelerator's ``bytes_limit`` or, on CPU, host
memory.

MFU: model FLOPs per step come from XLA's cost analysis of one compiled
single-seed step with ``conv_impl="xla"`` (the im2col of ``"gemm"`` would
count the patch extraction as FLOPs, and cost analysis does not multiply a
scan body by its trip count, hence the separate one-step program). Achieved
FLOP/s is ``flops_per_step * seeds * steps / time``; the peak is a table of
dense peaks for known accelerators, and on CPU a measured large fp32 matmul
(so "MFU" there is relative to that matmul, not to a datasheet).

Usage:
  python benchmarks/bench_train_throughput.py --quick          # about a minute on CPU
  python benchmarks/bench_train_throughput.py                  # full size (accelerator)
  python benchmarks/bench_train_throughput.py --models resnet18 --seeds 8 --chunks 2,4
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

from unlearn_jax import tuning  # noqa: E402
from unlearn_jax.models import COMPUTE_DTYPES, get_model  # noqa: E402
from unlearn_jax.training import competition_recipe, steps_per_epoch  # noqa: E402

EPOCH_EXAMPLES = 5000
BATCH = 64
STEPS_PER_EPOCH = steps_per_epoch(EPOCH_EXAMPLES, BATCH)  # 79

# Dense peak FLOP/s by device kind substring: (bf16, fp32). Datasheet numbers (SXM parts).
PEAK_FLOPS = {
    "H200": (989e12, 67e12),
    "H100": (989e12, 67e12),
    "A100": (312e12, 19.5e12),
    "L4": (121e12, 30e12),
    "TPU v5 lite": (197e12, 197e12 / 2),
    "TPU v4": (275e12, 275e12 / 2),
}


def build(model_name: str, conv_impl: str, dtype_name: str):
  """``(init, steps_fn, one_step)`` of the competition recipe (see ``tuning.step_programs``)."""
  model = get_model(model_name, 10, conv_impl=conv_impl, dtype=COMPUTE_DTYPES[dtype_name])
  return tuning.step_programs(model, competition_recipe(), BATCH, STEPS_PER_EPOCH)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def peak_flops(dtype_name: str) -> tuple[float, str]:
  """``(FLOP/s, source)`` peak for the default device."""
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    n = 1024
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    jax.block_until_ready(mm(a))
    t = _timing.time_fn(lambda: mm(a), repeats=5)["min_s"]
    return 2 * n ** 3 / t, "measured 1024^2 fp32 matmul"
  for kind, (bf16, fp32) in PEAK_FLOPS.items():
    if kind in dev.device_kind:
      return (bf16 if dtype_name == "bfloat16" else fp32), f"{kind} datasheet {dtype_name}"
  return float("nan"), f"unknown peak for {dev.device_kind}"


def _slice(tree, lo, hi):
  return jax.tree.map(lambda x: x[lo:hi], tree)


def resolve_engine(label: str, model_name: str, conv_impl: str, dtype_name: str, num_seeds: int) -> str:
  """The benchmark strategy ``tuning.seed_runner(strategy=label)`` (``auto`` or ``tune``) runs for this workload."""
  workload = tuning.Workload(model=model_name, num_classes=10, image_shape=(32, 32, 3), recipe="competition",
                             batch_size=BATCH, conv_impl=conv_impl, dtype=dtype_name)
  strategy, chunk, _ = tuning.resolve_strategy(label, None, model_name, workload, max_chunk=num_seeds)
  if strategy == "chunked" and chunk and chunk < num_seeds:
    return f"chunk{chunk}"
  return "vmap" if strategy == "chunked" else strategy


def bench_model(model_name: str, conv_impl: str, dtype_name: str, num_seeds: int, steps: int,
                strategies: list[str], repeats: int, data, model_flops: float, peak: float,
                capacity: float) -> list[dict[str, Any]]:
  """Times every strategy for one (model, conv_impl, dtype); returns one row per strategy."""
  init, steps_fn, _ = build(model_name, conv_impl, dtype_name)
  has_conv = "mlp" not in model_name
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(num_seeds, dtype=jnp.uint32))
  states = jax.jit(jax.vmap(init, in_axes=(0, None)))(keys, data)
  jax.block_until_ready(states)
  data_bytes = sum(x.nbytes for x in jax.tree.leaves(data))
  vmapped = jax.jit(jax.vmap(steps_fn, in_axes=(0, 0, None)))
  prepared = []
  for label in strategies:
    engine = label in ("auto", "tune")
    strategy = resolve_engine(label, model_name, conv_impl, dtype_name, num_seeds) if engine else label
    if strategy == "loop":
      prog = jax.jit(steps_fn)
      calls = [(jax.tree.map(lambda x: x[i], states), keys[i], data) for i in range(num_seeds)]
      per_call = 1
    elif strategy == "vmap" or strategy.startswith("chunk"):
      k = num_seeds if strategy == "vmap" else int(strategy[5:])
      if num_seeds % k:
        continue
      prog = vmapped
      calls = [(_slice(states, lo, lo + k), keys[lo:lo + k], data) for lo in range(0, num_seeds, k)]
      per_call = k
    elif strategy == "shard":
      devices = jax.local_devices()
      if num_seeds % len(devices):
        continue
      mesh = Mesh(np.asarray(devices), ("seeds",))
      seeds_sh, repl = NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())
      prog = jax.jit(jax.vmap(steps_fn, in_axes=(0, 0, None)), in_shardings=(seeds_sh, seeds_sh, repl),
                     out_shardings=seeds_sh)
      calls = [(jax.device_put(states, seeds_sh), jax.device_put(keys, seeds_sh), jax.device_put(data, repl))]
      per_call = num_seeds // len(devices)  # memory analysis is per device
    else:
      raise ValueError(f"unknown strategy {strategy!r}; expected loop, vmap, chunk<k> or shard")
    t0 = time.perf_counter()
    compiled = prog.lower(*calls[0]).compile()
    compile_s = time.perf_counter() - t0
    call = lambda compiled=compiled, calls=calls: [compiled(*c) for c in calls]
    per_seed_bytes = (tuning.memory_bytes(compiled) - data_bytes) / per_call
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first_s = time.perf_counter() - t0
    prepared.append((f"{label}={strategy}" if engine else label, call, compile_s, first_s, per_seed_bytes))
  # Repeats interleave the strategies, so a change in background load hits all of them alike.
  times = {strategy: [] for strategy, *_ in prepared}
  for _ in range(repeats):
    for strategy, call, *_ in prepared:
      t0 = time.perf_counter()
      jax.block_until_ready(call())
      times[strategy].append(time.perf_counter() - t0)
  rows = []
  for strategy, _, compile_s, first_s, per_seed_bytes in prepared:
    median_s = statistics.median(times[strategy])
    rate = num_seeds * steps / median_s / STEPS_PER_EPOCH
    achieved = model_flops * num_seeds * steps / median_s
    rows.append(dict(model=model_name, conv_impl=conv_impl if has_conv else "-", dtype=dtype_name,
                     strategy=strategy,
                     seeds=num_seeds, steps=steps, compile_s=compile_s, first_s=first_s,
                     median_s=median_s, min_s=min(times[strategy]), times_s=times[strategy],
                     model_epochs_per_s=rate, flops_per_step=model_flops, achieved_flops=achieved,
                     mfu=achieved / peak, bytes_per_seed=per_seed_bytes,
                     seeds_fit=math.floor(0.9 * capacity / per_seed_bytes) if per_seed_bytes > 0 else None))
    print(f"# {model_name}/{conv_impl}/{dtype_name} {strategy}: compile {compile_s:.1f}s, "
          f"median {median_s:.3f}s of {len(times[strategy])}, {rate:.3g} models·epochs/s",
          file=sys.stderr, flush=True)
  return rows


def model_step_flops(model_name: str, dtype_name: str, data) -> float:
  """FLOPs of one training step of one seed (``conv_impl='xla'``), from XLA's cost analysis."""
  init, _, one_step = build(model_name, "xla", dtype_name)
  key = jax.random.key(0)
  state = jax.eval_shape(init, key, data)
  return _flops(jax.jit(one_step).lower(state, key, data).compile())


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="small CPU-sized run (about a minute)")
  p.add_argument("--models", default="resnet18,cnn,mlp")
  p.add_argument("--conv-impls", default=None, help="comma list (default xla,gemm; quick: gemm)")
  p.add_argument("--dtypes", default="float32", help="comma list of float32,bfloat16 (compute dtype)")
  p.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default 64; quick 4)")
  p.add_argument("--steps", type=int, default=None, help="training steps per timed call (default 20; quick 2)")
  p.add_argument("--chunks", default=None, help="chunk sizes k (default 8,16,32; quick 2)")
  p.add_argument("--strategies", default="loop,vmap,chunked,shard,auto",
                 help="comma list of loop, vmap, chunked (one per --chunks k), shard, auto (the engine's default), "
                      "tune (the chunk unlearn_jax.tuning measures for this workload; stored per machine)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
  args = p.parse_args(argv)

  if args.quick:
    seeds_n, steps, chunks = args.seeds or 4, args.steps or 2, args.chunks or "2"
    conv_impls = args.conv_impls or "gemm"
  else:
    seeds_n, steps, chunks = args.seeds or 64, args.steps or 20, args.chunks or "8,16,32"
    conv_impls = args.conv_impls or "xla,gemm"
  strategies = []
  for s in args.strategies.split(","):
    strategies += [f"chunk{k}" for k in chunks.split(",") if k] if s == "chunked" else [s]
  data = tuning.random_split_data((32, 32, 3), 10, steps * BATCH)
  capacity, cap_label = tuning.device_capacity()
  rows = []
  for dtype_name in args.dtypes.split(","):
    peak, peak_src = peak_flops(dtype_name)
    for model_name in args.models.split(","):
      flops = model_step_flops(model_name, dtype_name, data)
      for conv_impl in conv_impls.split(","):
        if model_name == "mlp" and conv_impl != conv_impls.split(",")[0]:
          continue  # no convolutions: the impl does not matter
        n = seeds_n
        strat = [s for s in strategies if not (s.startswith("chunk") and int(s[5:]) >= n)]
        if args.quick and model_name.startswith("resnet"):
          # ResNet-18 on CPU in the quick run: loop and vmap at 2 seeds.
          n, strat = min(seeds_n, 2), [s for s in strat if s in ("loop", "vmap")]
        new = bench_model(model_name, conv_impl, dtype_name, n, steps, strat, args.repeats, data, flops,
                          peak, capacity)
        loop = next((r["model_epochs_per_s"] for r in new if r["strategy"] == "loop"), float("nan"))
        for r in new:
          r["vs_loop"] = r["model_epochs_per_s"] / loop
          r["peak_flops"], r["peak_source"], r["capacity"] = peak, peak_src, cap_label
          if not args.no_record:
            _timing.record("train_throughput", {k: r[k] for k in ("model", "conv_impl", "dtype", "strategy",
                                                                  "seeds", "steps")},
                           {k: v for k, v in r.items() if k not in ("model", "conv_impl", "dtype", "strategy",
                                                                     "seeds", "steps")})
        rows += new
        print(f"# done {model_name}/{conv_impl}/{dtype_name}", file=sys.stderr, flush=True)

  print(f"device: {_timing.device_description()}; jax {jax.__version__}; batch {BATCH}; "
        f"{steps} steps/call; epoch = {STEPS_PER_EPOCH} steps ({EPOCH_EXAMPLES} examples); "
        f"seeds/device from {cap_label}; peak: {rows[0]['peak_source'] if rows else '-'} "
        f"{rows[0]['peak_flops'] / 1e12 if rows else 0:.3g} TFLOP/s")
  _timing.print_table(
      ["model", "conv", "dtype", "strategy", "seeds", "compile s", "call s (median)", "models·epochs/s",
       "x loop", "GFLOP/step", "MFU", "MB/seed", "seeds/device"],
      [[r["model"], r["conv_impl"], r["dtype"], r["strategy"], r["seeds"], f"{r['compile_s']:.1f}",
        f"{r['median_s']:.3f}", f"{r['model_epochs_per_s']:.3g}", f"{r['vs_loop']:.2f}",
        f"{r['flops_per_step'] / 1e9:.3g}", f"{100 * r['mfu']:.1f}%", f"{r['bytes_per_seed'] / 2**20:.0f}",
        r["seeds_fit"]] for r in rows])
  return 0


if __name__ == "__main__":
  sys.exit(main())
