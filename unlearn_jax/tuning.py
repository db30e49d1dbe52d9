"""Choosing how the seed axis runs: measured tables, measurements, and the plan.

:mod:`unlearn_jax.seeds` runs a per-seed function over many keys with a concrete
strategy (``vmap``, ``chunked``, ``loop``, ``shard``). This module decides which:

* :data:`DEFAULT_STRATEGY` (and :data:`unlearn_jax.models.DEFAULT_CONV_IMPL` for the
  convolution lowering) hold choices benchmarked ahead of time for some backends
  (``benchmarks/bench_train_throughput.py``, tables in ``benchmarks/README.md``);
* anywhere else (or with ``strategy="tune"``) the choice is measured instead of
  guessed: a few training steps of the real workload (model, recipe, batch size,
  image shape, compute dtype, convolution lowering) are timed as a per-seed loop
  (chunk 1) and as vmapped chunks of 2, 4, 8, ... seeds. The ladder stops when a
  larger chunk no longer speeds a seed-step up by ``min_gain``, when its compiled
  program would not fit in ``memory_fraction`` of the device's memory, or when the
  device runs out of memory. The choice is the smallest chunk whose time per
  seed-step is within ``tolerance`` of the fastest (smaller chunks hold less memory
  and lose less work to an interruption);
* :func:`plan_strategy` turns ``auto``/``tune`` into ``(strategy, chunk_size, source)``
  for a number of seeds and devices, and :func:`seed_runner` builds the
  :class:`~unlearn_jax.seeds.SeedRunner` from it.

A measured choice is stored in a JSON file (``$UNLEARN_JAX_TUNE_FILE``, default
``$XDG_CACHE_HOME/unlearn_jax/strategies.json``) under a key naming the device
kind, the jax version and the workload, so each machine measures a workload once.
``unlearn-jax tune`` runs the measurement and prints every rung.

The chunk size never changes results (see :mod:`unlearn_jax.seeds`): seed ``i``
always gets the key ``fold_in(root, i)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import checkpoint, seeds
from unlearn_jax.data import Dataset, to_device
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES, CONV_IMPLS, default_conv_impl, get_model
from unlearn_jax.training import (RECIPES, TrainState, class_weights_for, init_variables, make_optimizer,
                                  make_train_step, run_epoch)

# (backend, model family) -> (strategy, chunk size). Families: "conv" (ResNet-18 and
# any other convolutional network), "small_conv" (cnn, tiny_cnn), "dense" (MLPs); a
# family missing for a backend falls back to that backend's "conv" entry.
# CPU values are measured, conv_impl="gemm", with benchmarks/bench_train_throughput.py
# on a shared 2-core CPU (medians of interleaved repeats; tables in benchmarks/README.md,
# "Training throughput"; each run also appends JSON lines to benchmarks/results.jsonl).
# The load made identical programs differ by up to ~35% between runs, so each entry is
# the setting that stayed within 10% of the best strategy in every run: ResNet-18 in
# chunks of 2 (within 6% of a per-seed loop at 4 and 8 seeds, best at 2; a full vmap of
# 8 seeds was 1.6x slower than the loop), the small CNN in chunks of 8 (within 3%), the
# MLP in chunks of 4 (best once, 7% behind the loop once; larger vmaps were 20-60% slower).
# Only measured rows belong here: on a backend without a row, "auto" measures the
# chunk size on the device itself (tuned_chunk below) instead of guessing.
DEFAULT_STRATEGY = {
    ("cpu", "conv"): ("chunked", 2),
    ("cpu", "small_conv"): ("chunked", 8),
    ("cpu", "dense"): ("chunked", 4),
}
# Used by "auto" on a backend without a measured row when no workload is given to tune on.
FALLBACK_STRATEGY = ("chunked", 8)


def model_family(model_name: str) -> str:
  """The :data:`DEFAULT_STRATEGY` family of a model name: ``dense``, ``small_conv`` or ``conv``."""
  if "mlp" in model_name:
    return "dense"
  if model_name in ("cnn", "tiny_cnn"):
    return "small_conv"
  return "conv"


def default_strategy(model_name: str, backend: Optional[str] = None) -> Optional[tuple[str, int]]:
  """``(strategy, chunk_size)`` from :data:`DEFAULT_STRATEGY`, or ``None`` where the backend has no row."""
  backend = backend or jax.default_backend()
  family = model_family(model_name)
  if (backend, family) in DEFAULT_STRATEGY:
    return DEFAULT_STRATEGY[(backend, family)]
  return DEFAULT_STRATEGY.get((backend, "conv"))


@dataclasses.dataclass(frozen=True)
class Workload:
  """What is trained per seed: the inputs of the measurement and of its cache key."""

  model: str
  num_classes: int
  image_shape: tuple[int, ...]
  recipe: str = "competition"
  batch_size: Optional[int] = None  # None: the recipe's
  conv_impl: str = "gemm"
  dtype: str = "float32"

  def __post_init__(self):
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f"unknown compute dtype {self.dtype!r}; expected one of {sorted(COMPUTE_DTYPES)}")

  @classmethod
  def of_run(cls, model: str, data, recipe_name: str, recipe, conv_impl: str, dtype: str) -> "Workload":
    """The workload of a run training ``model`` on device data ``data`` with a resolved ``recipe``."""
    return cls(model=model, num_classes=int(data.num_classes), image_shape=tuple(int(d) for d in data.image_shape),
               recipe=recipe_name, batch_size=recipe.batch_size, conv_impl=conv_impl, dtype=dtype)

  def cache_key(self) -> str:
    dev = jax.local_devices()[0]
    shape = "x".join(str(d) for d in self.image_shape)
    return (f"{dev.platform}|{dev.device_kind}|jax {jax.__version__}|{self.model}|{self.num_classes} classes|"
            f"{shape}|{self.recipe}|batch {self.batch_size or 'default'}|{self.conv_impl}|{self.dtype}")


@dataclasses.dataclass
class Trial:
  """One rung of the ladder: ``chunk`` seeds per program (1 = the per-seed loop)."""

  chunk: int
  seed_step_s: float = float("nan")  # median call time / (chunk * steps)
  bytes_per_seed: float = float("nan")
  compile_s: float = float("nan")
  note: str = ""  # "", "exceeds memory" or "out of memory"

  @property
  def ran(self) -> bool:
    return math.isfinite(self.seed_step_s)


def random_split_data(image_shape: tuple[int, ...], num_classes: int, num_examples: int, seed: int = 0):
  """Device-resident random uint8 images with every example in ``retain`` (for timing only)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_examples, *image_shape), dtype=np.uint8)
  labels = rng.integers(0, num_classes, num_examples).astype(np.int64)
  labels[:num_classes] = np.arange(num_classes)[:num_examples]
  idx = np.arange(num_examples)
  channels = image_shape[-1]
  ds = Dataset(name="random", images=images, labels=labels, groups=np.full(num_examples, -1),
               num_classes=num_classes, train_idx=idx, test_idx=idx, scale=1 / 255.0,
               mean=(0.5,) * channels, std=(0.25,) * channels)
  return to_device(ds, idx, idx[:0], idx[:0], idx)


def step_programs(model, recipe, batch_size: int, epoch_steps: int):
  """``(init, steps_fn, one_step)`` of the training recipe for timing.

  ``init(key, data) -> TrainState``; ``steps_fn(state, key, data) -> (state, loss)``
  runs one pass of ``run_epoch`` over ``data.retain`` (so ``len(retain) / batch_size``
  steps); ``one_step(state, key, data)`` is a single step on the first batch.
  ``epoch_steps`` sets the learning-rate schedule's epoch length.
  """
  tx = make_optimizer(recipe, epoch_steps)

  def init(key, data):
    params, batch_stats = init_variables(model, jax.random.fold_in(key, 0), data.image_shape)
    return TrainState.create(params, batch_stats, tx)

  def make_step(data):
    return make_train_step(model, tx, class_weights_for(data, "retain"), recipe.augment)

  def steps_fn(state, key, data):
    return run_epoch(make_step(data), state, data, data.retain, batch_size, jax.random.fold_in(key, 1),
                     state.step // epoch_steps)

  def one_step(state, key, data):
    return make_step(data)(state, data.gather(data.retain[:batch_size]), key)

  return init, steps_fn, one_step


def memory_bytes(compiled) -> float:
  """Argument + output + temporary bytes of a compiled program (NaN where unsupported)."""
  try:
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - getattr(m, "alias_size_in_bytes", 0))
  except Exception:  # some backends do not implement it
    return float("nan")


def device_capacity() -> tuple[float, str]:
  """``(bytes, label)``: the accelerator's memory limit, or host memory on CPU."""
  dev = jax.local_devices()[0]
  if dev.platform != "cpu":
    stats = dev.memory_stats() or {}
    if "bytes_limit" in stats:
      return float(stats["bytes_limit"]), "device memory"
  return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host memory"


def is_oom(err: Exception) -> bool:
  text = str(err)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def measure(workload: Workload, max_chunk: int, *, steps: int = 3, repeats: int = 3, min_gain: float = 0.05,
            memory_fraction: float = 0.5, capacity: Optional[float] = None, min_call_s: float = 0.05,
            chunks: Optional[Sequence[int]] = None, log: Optional[Callable[[str], None]] = None) -> list[Trial]:
  """Times the per-seed loop and vmapped chunks of 2, 4, ... up to ``max_chunk`` seeds.

  Args:
    workload: what to train.
    max_chunk: the largest chunk worth trying (e.g. the number of models).
    steps: training steps per timed call (one ``run_epoch`` over ``steps`` batches).
    repeats: timed measurements per rung (after two untimed calls); the median is used.
    min_gain: stop once a rung is not this fraction faster per seed-step than the best so far.
    memory_fraction: skip chunks whose compiled program needs more than this fraction of
      ``capacity``; the margin covers what the real per-seed run holds beyond a training step
      (a best-validation copy of the parameters, evaluation activations).
    capacity: device memory in bytes (default: :func:`device_capacity`).
    min_call_s: calls shorter than this are timed in back-to-back groups lasting about
      this long, so that dispatch jitter does not decide the choice.
    chunks: measure exactly these chunk sizes instead of the ladder (no gain rule; the
      memory rules still end the list).
    log: called with one line per rung.

  Returns:
    One :class:`Trial` per rung tried, in order.
  """
  if max_chunk < 1:
    raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
  if workload.recipe not in RECIPES:
    raise ValueError(f"unknown recipe {workload.recipe!r}; expected one of {sorted(RECIPES)}")
  recipe = RECIPES[workload.recipe]()
  if workload.batch_size:
    recipe = recipe.replace(batch_size=int(workload.batch_size))
  batch = recipe.batch_size
  model = get_model(workload.model, workload.num_classes, conv_impl=workload.conv_impl,
                    dtype=COMPUTE_DTYPES[workload.dtype])
  data = random_split_data(tuple(workload.image_shape), workload.num_classes, steps * batch)
  init, steps_fn, _ = step_programs(model, recipe, batch, epoch_steps=max(steps, 1) * 100)
  capacity = capacity if capacity is not None else device_capacity()[0]
  data_bytes = sum(x.nbytes for x in jax.tree.leaves(data) if hasattr(x, "nbytes"))
  root = jax.random.key(0)
  init_one, init_many = jax.jit(init), jax.jit(jax.vmap(init, in_axes=(0, None)))
  single, vmapped = jax.jit(steps_fn), jax.jit(jax.vmap(steps_fn, in_axes=(0, 0, None)))

  rungs = [1]
  while rungs[-1] * 2 <= max_chunk:
    rungs.append(rungs[-1] * 2)
  if chunks is not None:
    rungs, min_gain = [int(k) for k in chunks], -math.inf
  trials: list[Trial] = []
  best = math.inf
  for k in rungs:
    trial = Trial(chunk=k)
    trials.append(trial)
    try:
      keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(k, dtype=jnp.uint32))
      # Compiled from shapes first, so a chunk that does not fit is never allocated.
      if k == 1:
        program, make_state, seed_keys = single, init_one, keys[0]
      else:
        program, make_state, seed_keys = vmapped, init_many, keys
      t0 = time.perf_counter()
      compiled = program.lower(jax.eval_shape(make_state, seed_keys, data), seed_keys, data).compile()
      trial.compile_s = time.perf_counter() - t0
      trial.bytes_per_seed = (memory_bytes(compiled) - data_bytes) / k
      if trial.bytes_per_seed * k > memory_fraction * capacity:
        trial.note = "exceeds memory"
      else:
        args = (make_state(seed_keys, data), seed_keys, data)
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        once = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        once = min(once, time.perf_counter() - t0)
        calls = max(1, math.ceil(min_call_s / max(once, 1e-9)))  # short calls are timed in groups
        times = []
        for _ in range(repeats):
          t0 = time.perf_counter()
          for _ in range(calls):
            out = compiled(*args)
          jax.block_until_ready(out)
          times.append((time.perf_counter() - t0) / calls)
        trial.seed_step_s = statistics.median(times) / (k * steps)
        del args, out
    except Exception as err:  # noqa: BLE001 - only running out of memory ends the ladder quietly
      if not is_oom(err):
        raise
      trial.note = "out of memory"
    if log:
      log(f"chunk {k:4d}: " + (f"{1e3 * trial.seed_step_s:.3f} ms per seed-step" if trial.ran else trial.note)
          + (f", {trial.bytes_per_seed / 2**20:.0f} MB/seed" if math.isfinite(trial.bytes_per_seed) else ""))
    if not trial.ran or trial.seed_step_s > (1 - min_gain) * best:
      break
    best = min(best, trial.seed_step_s)
  return trials


def choose(trials: list[Trial], tolerance: float = 0.05) -> int:
  """The smallest chunk whose time per seed-step is within ``tolerance`` of the fastest."""
  ran = [t for t in trials if t.ran]
  if not ran:
    raise ValueError("no chunk size could be measured (even one seed exceeds the memory budget)")
  fastest = min(t.seed_step_s for t in ran)
  return min(t.chunk for t in ran if t.seed_step_s <= (1 + tolerance) * fastest)


def cache_file() -> str:
  """Where tuned choices are stored."""
  if os.environ.get("UNLEARN_JAX_TUNE_FILE"):
    return os.environ["UNLEARN_JAX_TUNE_FILE"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "unlearn_jax", "strategies.json")


def load_choices(path: str) -> dict[str, Any]:
  """The stored choices (empty if the file is missing or unreadable)."""
  from unlearn_jax import files
  try:  # a regular file only, at most 16 MiB: a FIFO or link in its place is ignored, never waited on
    table = json.loads(files.read_regular(path, 16 << 20, "choices file").decode("utf-8"))
    return table if isinstance(table, dict) else {}
  except (OSError, ValueError):
    return {}


def _store_choice(path: str, key: str, entry: dict[str, Any]) -> None:
  table = load_choices(path)
  table[key] = entry
  checkpoint.atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True))


_MEMO: dict[tuple[str, str, int], int] = {}


def wait_for_choice(path: str, key: str, valid: Callable[[Any], bool], wait_s: float,
                    log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
  """Polls ``path`` until ``key`` holds an entry that ``valid`` accepts (another process measures it)."""
  if log:
    log(f"waiting for another process to store the choice for {key} in {path}")
  deadline = time.monotonic() + wait_s
  while True:
    entry = load_choices(path).get(key)
    if valid(entry):
      return entry
    if time.monotonic() > deadline:
      raise TimeoutError(f"no tuned choice for {key} appeared in {path} within {wait_s:.0f} s")
    time.sleep(0.2)


def tuned_chunk(workload: Workload, max_chunk: int = 512, *, path: Optional[str] = None, retune: bool = False,
                log: Optional[Callable[[str], None]] = None, measure_here: bool = True, wait_s: float = 3600.0,
                **measure_kwargs) -> int:
  """The chunk size for ``workload`` on this device: stored, or measured now and stored.

  A stored choice is reused when it was measured with a ladder reaching at least
  ``min(max_chunk, its own limit)``; ``retune`` measures again regardless. With
  ``measure_here=False`` (the other processes of a multi-process run, which must all
  use the same chunks) nothing is measured: the call waits up to ``wait_s`` for the
  measuring process to store its choice in ``path``.
  """
  path = path or cache_file()
  key = workload.cache_key()
  if not retune and (path, key, max_chunk) in _MEMO:
    return _MEMO[(path, key, max_chunk)]
  entry = load_choices(path).get(key)
  has_chunk = lambda e: isinstance(e, dict) and isinstance(e.get("chunk"), int)
  if not retune and has_chunk(entry):
    if entry.get("stopped_early") or entry.get("max_chunk", 0) >= max_chunk:
      chunk = min(entry["chunk"], max_chunk)
      _MEMO[(path, key, max_chunk)] = chunk
      return chunk
  log = log or (lambda line: print(f"[tune] {line}", file=sys.stderr, flush=True))
  if not measure_here:
    entry = wait_for_choice(path, key, has_chunk, wait_s, log)
    return min(entry["chunk"], max_chunk)
  log(f"measuring seed-axis chunk sizes for {workload.model} ({workload.dtype}, {workload.conv_impl}) on "
      f"{jax.local_devices()[0].device_kind}, up to {max_chunk} seeds per program")
  trials = measure(workload, max_chunk, log=log, **measure_kwargs)
  chunk = choose(trials)
  stopped_early = trials[-1].chunk < max_chunk or not trials[-1].ran
  _store_choice(path, key, {"chunk": chunk, "max_chunk": max_chunk, "stopped_early": stopped_early,
                            "trials": [dataclasses.asdict(t) for t in trials]})
  log(f"chose chunks of {chunk} (stored in {path})")
  _MEMO[(path, key, max_chunk)] = chunk
  return chunk


def tuned_conv_impl(workload: Workload, max_chunk: int = 512, *, path: Optional[str] = None, retune: bool = False,
                    tolerance: float = 0.05, log: Optional[Callable[[str], None]] = None, measure_here: bool = True,
                    wait_s: float = 3600.0, **measure_kwargs) -> str:
  """``"gemm"`` or ``"xla"`` for ``workload`` on this device: stored, or measured now and stored.

  The GEMM lowering's chunk size is tuned first (:func:`tuned_chunk`); XLA's convolution
  is then timed at that chunk. XLA's is chosen only if it is more than ``tolerance``
  faster per seed-step; running out of memory counts as slower. ``measure_here`` and
  ``wait_s`` as in :func:`tuned_chunk`.
  """
  path = path or cache_file()
  key = dataclasses.replace(workload, conv_impl="auto").cache_key()
  has_impl = lambda e: isinstance(e, dict) and e.get("conv_impl") in CONV_IMPLS
  entry = load_choices(path).get(key)
  if not retune and has_impl(entry):
    return entry["conv_impl"]
  log = log or (lambda line: print(f"[tune] {line}", file=sys.stderr, flush=True))
  if not measure_here:
    return wait_for_choice(path, key, has_impl, wait_s, log)["conv_impl"]
  gemm = dataclasses.replace(workload, conv_impl="gemm")
  chunk = tuned_chunk(gemm, max_chunk, path=path, retune=retune, log=log, **measure_kwargs)
  trials = load_choices(path).get(gemm.cache_key(), {}).get("trials", [])
  t_gemm = next((t["seed_step_s"] for t in trials if t["chunk"] == chunk), float("nan"))
  if not math.isfinite(t_gemm):  # the stored ladder lacks that rung: time it again
    t_gemm = measure(gemm, chunk, chunks=[chunk], **measure_kwargs)[0].seed_step_s
  log(f"timing XLA's convolution at chunks of {chunk}")
  xla = measure(dataclasses.replace(workload, conv_impl="xla"), chunk, chunks=[chunk], log=log, **measure_kwargs)[0]
  choice = "xla" if xla.ran and xla.seed_step_s < (1 - tolerance) * t_gemm else "gemm"
  _store_choice(path, key, {"conv_impl": choice, "chunk": chunk,
                            "seed_step_s": {"gemm": t_gemm, "xla": xla.seed_step_s}, "xla_note": xla.note})
  log(f"chose conv_impl={choice} (gemm {1e3 * t_gemm:.3f} ms, xla "
      + (f"{1e3 * xla.seed_step_s:.3f} ms" if xla.ran else xla.note) + " per seed-step)")
  return choice


def resolve_conv_impl(conv_impl: str, workload: Workload, max_chunk: int = 512, **tune_kwargs) -> tuple[str, str]:
  """Turns ``"auto"`` into ``("gemm" | "xla", source)``; a concrete lowering is returned as given.

  ``auto``: models without convolutions take ``gemm`` (it does not matter); a backend
  with a measured default takes it; elsewhere both lowerings are timed on the device
  (:func:`tuned_conv_impl`, given ``tune_kwargs``).
  """
  if conv_impl not in CONV_IMPL_CHOICES:
    raise ValueError(f"unknown conv impl {conv_impl!r}; expected one of {list(CONV_IMPL_CHOICES)}")
  if conv_impl != "auto":
    return conv_impl, "given"
  if model_family(workload.model) == "dense":
    return "gemm", "no convolutions"
  measured = default_conv_impl()
  if measured is not None:
    return measured, f"measured table ({jax.default_backend()})"
  return tuned_conv_impl(workload, max_chunk, **tune_kwargs), "tuned on this device"


def resolve_strategy(strategy: str, chunk_size: Optional[int] = None, model_name: str = "",
                     workload: Optional[Workload] = None, max_chunk: int = 512,
                     tune_kwargs: Optional[dict] = None) -> tuple[str, Optional[int], str]:
  """Turns ``auto``/``tune`` into a concrete ``(strategy, chunk_size, source)``.

  ``source`` says where the choice came from: ``"given"``, ``"measured table (<backend>)"``,
  ``"tuned on this device"`` or ``"fallback (unmeasured backend)"``.

  Args:
    strategy: an entry of :data:`unlearn_jax.seeds.STRATEGIES`.
    chunk_size: a chunk size fixed by the caller (kept as given).
    model_name: the model, for the :data:`DEFAULT_STRATEGY` lookup.
    workload: the :class:`Workload` to measure on when the table has no row for
      this backend (and always for ``"tune"``).
    max_chunk: the largest chunk worth measuring (e.g. the number of models).
    tune_kwargs: passed to :func:`tuned_chunk` (where the choice is stored; whether
      this process measures or waits for another's choice).
  """
  if strategy not in seeds.STRATEGIES:
    raise ValueError(f"unknown seed strategy {strategy!r}; expected one of {list(seeds.STRATEGIES)}")
  if chunk_size is not None and int(chunk_size) < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  if strategy not in ("auto", "tune"):
    return strategy, chunk_size, "given"
  table = default_strategy(model_name) if strategy == "auto" else None
  if table is not None:
    source = f"measured table ({jax.default_backend()})" + (", chunk size given" if chunk_size else "")
    return table[0], chunk_size or table[1], source
  if chunk_size is not None:
    return "chunked", chunk_size, "given"
  if workload is None:
    if strategy == "tune":
      raise ValueError("strategy 'tune' needs a workload (model, data shape, recipe) to measure")
    return FALLBACK_STRATEGY[0], FALLBACK_STRATEGY[1], "fallback (unmeasured backend)"
  chunk = tuned_chunk(workload, max(1, max_chunk), **(tune_kwargs or {}))
  return ("loop", 1, "tuned on this device") if chunk == 1 else ("chunked", chunk, "tuned on this device")


def plan_strategy(strategy: str, chunk_size: Optional[int] = None, model_name: str = "",
                  workload: Optional[Workload] = None, num_seeds: int = 512, num_devices: int = 1,
                  tune_kwargs: Optional[dict] = None) -> tuple[str, Optional[int], str]:
  """:func:`resolve_strategy` for ``num_seeds`` seeds on ``num_devices`` local devices.

  With several devices ``auto``/``tune`` shard the seed axis over them: the table's
  or the measurement's chunk is per device and multiplied by the device count (a
  given ``chunk_size`` stays the total seeds per program).
  """
  concrete, chunk, source = resolve_strategy(strategy, chunk_size, model_name, workload,
                                             seeds.seeds_per_device(num_seeds, num_devices), tune_kwargs)
  if strategy in ("auto", "tune") and num_devices > 1:
    return "shard", chunk_size or (chunk or 1) * num_devices, f"{source}; sharded over {num_devices} devices"
  return concrete, chunk, source


def seed_runner(fn: Callable[..., Any], strategy: str = "auto", chunk_size: Optional[int] = None,
                model_name: str = "", devices: Optional[Sequence[jax.Device]] = None,
                workload: Optional[Workload] = None, num_seeds: int = 512,
                tune_kwargs: Optional[dict] = None) -> seeds.SeedRunner:
  """A :class:`~unlearn_jax.seeds.SeedRunner` for ``fn`` with ``strategy`` planned by :func:`plan_strategy`.

  ``auto`` needs ``model_name`` (the table lookup), ``tune`` a ``workload``; with
  several ``devices`` (default: all local devices) ``auto``/``tune`` shard over them.
  The runner's ``source`` says where the choice came from.
  """
  devices = list(devices) if devices is not None else jax.local_devices()
  concrete, chunk, source = plan_strategy(strategy, chunk_size, model_name, workload, num_seeds, len(devices),
                                          tune_kwargs)
  return seeds.SeedRunner(fn, concrete, chunk, devices=devices, source=source)
