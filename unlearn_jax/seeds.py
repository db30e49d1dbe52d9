"""The seed axis: the only module that knows many models run at once.

A per-seed function ``fn(key, *shared) -> pytree`` (one training or unlearning
run) is run for many keys by one of these strategies:

* ``"vmap"``: one program over all seeds;
* ``"chunked"``: the same vmapped program over chunks of ``chunk_size`` seeds
  (bounded memory; the last chunk is padded, so it does not recompile);
* ``"loop"``: one jitted single-seed program called once per seed;
* ``"shard"``: the vmapped program with the seed axis sharded over all local
  devices (padded to a multiple of the device count), in chunks when
  ``chunk_size`` is given.

Every strategy returns the same stacked results (up to floating-point
reassociation; the tests state the tolerance). Seed ``i`` always gets the key
``fold_in(root, i)``, so its result does not depend on how many seeds run
together, the chunk size, the device count or a resume point.

``"auto"`` picks a strategy from :data:`DEFAULT_STRATEGY`, a table measured by
``benchmarks/bench_train_throughput.py`` (see ``benchmarks/README.md``), where the
table has a row for the backend; elsewhere, and always with ``"tune"``, the chunk
size is measured on the device for the workload (:mod:`unlearn_jax.autotune`) and
remembered. :func:`resolve_strategy` makes that choice.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

STRATEGIES = ("auto", "tune", "vmap", "chunked", "loop", "shard")

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
# chunk size on the device itself (unlearn_jax/autotune.py) instead of guessing.
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


def seed_keys(root: jax.Array, num_seeds: int, start: int = 0) -> jax.Array:
  """Keys ``fold_in(root, i)`` for ``i in [start, start + num_seeds)``."""
  return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(start, start + num_seeds, dtype=jnp.uint32))


def default_strategy(model_name: str, backend: Optional[str] = None) -> Optional[tuple[str, int]]:
  """``(strategy, chunk_size)`` from :data:`DEFAULT_STRATEGY`, or ``None`` where the backend has no row."""
  backend = backend or jax.default_backend()
  family = model_family(model_name)
  if (backend, family) in DEFAULT_STRATEGY:
    return DEFAULT_STRATEGY[(backend, family)]
  return DEFAULT_STRATEGY.get((backend, "conv"))


def resolve_strategy(strategy: str, chunk_size: Optional[int] = None, model_name: str = "",
                     workload=None, max_chunk: int = 512,
                     tune_kwargs: Optional[dict] = None) -> tuple[str, Optional[int], str]:
  """Turns ``auto``/``tune`` into a concrete ``(strategy, chunk_size, source)``.

  ``source`` says where the choice came from: ``"given"``, ``"measured table (<backend>)"``,
  ``"tuned on this device"`` or ``"fallback (unmeasured backend)"``.

  Args:
    strategy: an entry of :data:`STRATEGIES`.
    chunk_size: a chunk size fixed by the caller (kept as given).
    model_name: the model, for the :data:`DEFAULT_STRATEGY` lookup.
    workload: an :class:`unlearn_jax.autotune.Workload` to measure on when the
      table has no row for this backend (and always for ``"tune"``).
    max_chunk: the largest chunk worth measuring (e.g. the number of models).
    tune_kwargs: passed to :func:`unlearn_jax.autotune.tuned_chunk` (where the choice is
      stored; whether this process measures or waits for another's choice).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown seed strategy {strategy!r}; expected one of {list(STRATEGIES)}")
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
  from unlearn_jax import autotune  # the tuner trains models; seeds stays import-light

  chunk = autotune.tuned_chunk(workload, max(1, max_chunk), **(tune_kwargs or {}))
  return ("loop", 1, "tuned on this device") if chunk == 1 else ("chunked", chunk, "tuned on this device")


def seeds_per_device(num_seeds: int, num_devices: Optional[int] = None) -> int:
  """Seeds each local device runs (at least 1): ``ceil(num_seeds / num_devices)``."""
  return -(-max(1, num_seeds) // (num_devices or len(jax.local_devices())))


def plan_strategy(strategy: str, chunk_size: Optional[int] = None, model_name: str = "", workload=None,
                  num_seeds: int = 512, num_devices: int = 1,
                  tune_kwargs: Optional[dict] = None) -> tuple[str, Optional[int], str]:
  """:func:`resolve_strategy` for ``num_seeds`` seeds on ``num_devices`` local devices.

  With several devices ``auto``/``tune`` shard the seed axis over them: the table's
  or the measurement's chunk is per device and multiplied by the device count (a
  given ``chunk_size`` stays the total seeds per program).
  """
  concrete, chunk, source = resolve_strategy(strategy, chunk_size, model_name, workload,
                                             seeds_per_device(num_seeds, num_devices), tune_kwargs)
  if strategy in ("auto", "tune") and num_devices > 1:
    return "shard", chunk_size or (chunk or 1) * num_devices, f"{source}; sharded over {num_devices} devices"
  return concrete, chunk, source


def _pad_keys(keys: jax.Array, size: int) -> jax.Array:
  n = keys.shape[0]
  if n == size:
    return keys
  return jnp.concatenate([keys, jnp.broadcast_to(keys[:1], (size - n, *keys.shape[1:]))])


def _concat(parts: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


class SeedRunner:
  """Runs ``fn(key, *shared)`` over many keys with a chosen strategy.

  Compiled programs are cached on the runner, so repeated calls (e.g. chunk
  after chunk) never recompile.

  Args:
    fn: the per-seed function.
    strategy: one of :data:`STRATEGIES`; ``"auto"``/``"tune"`` are resolved by
      :func:`resolve_strategy` (``"auto"`` needs ``model_name``, ``"tune"`` a ``workload``).
    chunk_size: seeds per program for ``chunked`` and ``shard``.
    model_name: used by ``"auto"`` to look up :data:`DEFAULT_STRATEGY`.
    devices: devices for ``"shard"`` (default: all local devices).
    workload: an :class:`unlearn_jax.autotune.Workload` to measure the chunk size on
      where the table has no row for this backend.
    num_seeds: how many seeds will run (bounds the chunk sizes measured).

  With several devices, ``auto``/``tune`` shard over them (see :func:`plan_strategy`).
  """

  def __init__(self, fn: Callable[..., Any], strategy: str = "auto", chunk_size: Optional[int] = None,
               model_name: str = "", devices: Optional[Sequence[jax.Device]] = None, workload=None,
               num_seeds: int = 512):
    self.devices = list(devices) if devices is not None else jax.local_devices()
    strategy, chunk_size, self.source = plan_strategy(strategy, chunk_size, model_name, workload, num_seeds,
                                                      len(self.devices))
    self.fn = fn
    self.strategy = strategy
    self.chunk_size = chunk_size
    self._single = jax.jit(fn)
    self._programs: dict[Any, Callable] = {}

  def _vmap_program(self, num_shared: int):
    key = ("vmap", num_shared)
    if key not in self._programs:
      self._programs[key] = jax.jit(jax.vmap(self.fn, in_axes=(0,) + (None,) * num_shared))
    return self._programs[key]

  def _shard_program(self, num_shared: int):
    key = ("shard", num_shared)
    if key not in self._programs:
      mesh = Mesh(np.asarray(self.devices), ("seeds",))
      seeds = NamedSharding(mesh, PartitionSpec("seeds"))
      replicated = NamedSharding(mesh, PartitionSpec())
      program = jax.jit(jax.vmap(self.fn, in_axes=(0,) + (None,) * num_shared),
                        in_shardings=(seeds,) + (replicated,) * num_shared, out_shardings=seeds)
      self._programs[key] = program
    return self._programs[key]

  def chunk_bounds(self, num_seeds: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` seed ranges this runner processes one program at a time."""
    if self.strategy == "vmap":
      size = num_seeds
    elif self.strategy == "loop":
      size = 1
    else:
      size = self.chunk_size or num_seeds
    return [(s, min(s + size, num_seeds)) for s in range(0, num_seeds, size)]

  def run_chunk(self, keys: jax.Array, *shared) -> Any:
    """Runs one chunk of keys (any length) and returns stacked results."""
    n = keys.shape[0]
    if self.strategy == "loop":
      outs = [self._single(keys[i], *shared) for i in range(n)]
      return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    if self.strategy == "shard":
      ndev = len(self.devices)
      size = -(-n // ndev) * ndev
      if self.chunk_size:
        size = max(size, -(-self.chunk_size // ndev) * ndev)
      out = self._shard_program(len(shared))(_pad_keys(keys, size), *shared)
      return jax.tree.map(lambda x: x[:n], out)
    size = n if self.strategy == "vmap" else max(n, self.chunk_size or n)
    out = self._vmap_program(len(shared))(_pad_keys(keys, size), *shared)
    return out if size == n else jax.tree.map(lambda x: x[:n], out)

  def iter_chunks(self, keys: jax.Array, *shared, start: int = 0) -> Iterator[tuple[int, int, Any]]:
    """Yields ``(start, stop, results)`` per chunk, beginning at seed ``start``."""
    for lo, hi in self.chunk_bounds(keys.shape[0]):
      if hi <= start:
        continue
      yield lo, hi, self.run_chunk(keys[lo:hi], *shared)

  def __call__(self, keys: jax.Array, *shared) -> Any:
    return _concat([out for _, _, out in self.iter_chunks(keys, *shared)])


def run_seeds(fn: Callable[..., Any], keys: jax.Array, *shared, strategy: str = "auto",
              chunk_size: Optional[int] = None, model_name: str = "", workload=None) -> Any:
  """Runs ``fn(key, *shared)`` for every key and stacks the results on a leading seed axis."""
  return SeedRunner(fn, strategy, chunk_size, model_name, workload=workload,
                    num_seeds=int(keys.shape[0]))(keys, *shared)
