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

``"auto"`` and ``"tune"`` name no program of their own: :mod:`unlearn_jax.tuning`
turns them into one of the strategies above (from a table measured ahead of time, or
by timing the workload on the device) and builds the runner
(:func:`unlearn_jax.tuning.seed_runner`). This module only runs what it is given.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# The programs a SeedRunner builds.
RUN_STRATEGIES = ("vmap", "chunked", "loop", "shard")
# What a user may ask for: a program, or a choice left to unlearn_jax.tuning ("auto": a
# measured table or a measurement; "tune": always a measurement).
STRATEGIES = ("auto", "tune", *RUN_STRATEGIES)


def seed_keys(root: jax.Array, num_seeds: int, start: int = 0) -> jax.Array:
  """Keys ``fold_in(root, i)`` for ``i in [start, start + num_seeds)``."""
  return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(start, start + num_seeds, dtype=jnp.uint32))


def seeds_per_device(num_seeds: int, num_devices: Optional[int] = None) -> int:
  """Seeds each local device runs (at least 1): ``ceil(num_seeds / num_devices)``."""
  return -(-max(1, num_seeds) // (num_devices or len(jax.local_devices())))


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
    strategy: one of :data:`RUN_STRATEGIES` (``"auto"``/``"tune"`` are resolved by
      :func:`unlearn_jax.tuning.plan_strategy`; :func:`unlearn_jax.tuning.seed_runner`
      does both steps).
    chunk_size: seeds per program for ``chunked`` and ``shard``.
    devices: devices for ``"shard"`` (default: all local devices).
    source: where the choice of strategy came from, kept for reports (``"given"``).
  """

  def __init__(self, fn: Callable[..., Any], strategy: str, chunk_size: Optional[int] = None,
               devices: Optional[Sequence[jax.Device]] = None, source: str = "given"):
    if strategy in ("auto", "tune"):
      raise ValueError(f"strategy {strategy!r} is a choice, not a program: resolve it with "
                       "unlearn_jax.tuning.plan_strategy (or build the runner with unlearn_jax.tuning.seed_runner)")
    if strategy not in RUN_STRATEGIES:
      raise ValueError(f"unknown seed strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    if chunk_size is not None and int(chunk_size) < 1:
      raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    self.devices = list(devices) if devices is not None else jax.local_devices()
    self.source = source
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
