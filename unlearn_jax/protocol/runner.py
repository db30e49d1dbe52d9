"""The one chunked stage runner: every stage (original aside, one model) runs through :func:`run_chunks`.

A stage covers seeds ``[0, N)`` in chunks stored in a :class:`~unlearn_jax.checkpoint.ChunkStore`:
existing chunks are reused, missing ones are computed (dealt round-robin over the
processes of a multi-process run: chunk ``j`` to process ``j % P``), each saved atomically
before the next starts; every process then waits for the others' chunks and assembles
the stage. A corrupt entry found while assembling is reported, deleted, rebuilt and the
assembly retried. The training stages compute a chunk with a
:class:`~unlearn_jax.seeds.SeedRunner` (:func:`seed_chunks`); the margins of cached
retrained models compute it from that store's chunk of parameters.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from unlearn_jax import checkpoint, seeds
from unlearn_jax.protocol import budget
from unlearn_jax.protocol.errors import ProtocolError
from unlearn_jax.results.progress import Progress

Range = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class StageOutput:
  """What a chunked stage leaves: its host arrays (stacked over seeds), its store and the entries it rebuilt."""

  arrays: dict[str, np.ndarray]
  directory: str
  rebuilt: list[str]
  computed: int  # seeds this process computed (0: all from the cache or other processes)


def chunk_plan(store: checkpoint.ChunkStore, num: int, chunk: int) -> tuple[list[Range], list[Range]]:
  """``(reused, missing)`` seed ranges covering ``[0, num)``.

  Existing chunk files inside ``[0, num)`` are reused (greedily, from seed 0);
  each maximal uncovered gap is split into pieces of ``chunk`` seeds.
  """
  files = []
  for name in os.listdir(store.directory):
    if name.startswith("chunk-") and name.endswith(".npz"):
      try:
        lo, hi = (int(p) for p in name[len("chunk-"):-len(".npz")].split("-"))
      except ValueError:
        continue
      if 0 <= lo < hi <= num:
        files.append((lo, hi))
  by_start: dict[int, int] = {}
  for lo, hi in sorted(files):
    by_start[lo] = max(by_start.get(lo, lo), hi)
  reused, missing = [], []
  pos = 0
  while pos < num:
    if pos in by_start:
      reused.append((pos, by_start[pos]))
      pos = by_start[pos]
      continue
    nxt = min([s for s in by_start if s > pos] + [num])
    for lo in range(pos, nxt, chunk):
      missing.append((lo, min(lo + chunk, nxt)))
    pos = nxt
  return reused, missing


def fixed_plan(store: checkpoint.ChunkStore, ranges: Sequence[Range]) -> tuple[list[Range], list[Range]]:
  """``(reused, missing)`` of a stage whose chunks must be exactly ``ranges`` (those of another store)."""
  reused = [r for r in ranges if store.exists(*r)]
  return reused, [r for r in ranges if r not in reused]


def wait_for(store: checkpoint.ChunkStore, ranges: Sequence[Range], timeout: float, progress: Progress,
             stage: str) -> None:
  """Waits until every chunk of ``ranges`` exists in ``store`` (other processes write them)."""
  deadline = time.monotonic() + timeout
  pending = [r for r in ranges if not store.exists(*r)]
  if pending:
    progress.line(f"[{stage}] waiting for {len(pending)} chunk(s) from other processes")
  while pending:
    if time.monotonic() > deadline:
      raise ProtocolError(f"timed out after {timeout:.0f} s waiting for chunks {pending} in {store.directory}")
    time.sleep(0.2)
    pending = [r for r in pending if not store.exists(*r)]


def run_chunks(stage: str, store: checkpoint.ChunkStore, num: int,
               compute: Callable[[int, int], Mapping[str, np.ndarray]], plan: Callable[[], tuple[list[Range], list[Range]]],
               *, process_index: int = 0, process_count: int = 1, wait_timeout_s: float = 3600.0,
               progress: Optional[Progress] = None) -> StageOutput:
  """Runs (or reuses) the chunks of a stage covering ``num`` seeds; returns the stacked host arrays.

  ``compute(lo, hi)``: the host arrays of seeds ``[lo, hi)``; ``plan()``: the ``(reused, missing)``
  ranges (:func:`chunk_plan` or :func:`fixed_plan`).
  """
  progress = progress or Progress(enabled=False)
  computed = 0
  for attempt in range(3):  # corrupt files found while assembling are all rebuilt, then assembly is retried
    reused, missing = plan()
    if reused and not missing and attempt == 0:
      progress.line(f"[{stage}] {num} models from cache {store.directory}")
    mine = [r for j, r in enumerate(missing) if j % process_count == process_index]
    done = sum(hi - lo for lo, hi in reused)
    here, t0 = 0, time.perf_counter()
    cost = budget.stage(progress, stage, num)  # estimate and --max-hours check after each computed chunk
    for lo, hi in mine:
      store.save(lo, hi, dict(compute(lo, hi)), {"stage": stage})
      here += hi - lo
      done += hi - lo
      progress.chunk(stage, done, num, here, time.perf_counter() - t0)
      cost.after_chunk(done, here)
    computed += here
    wait_for(store, missing, wait_timeout_s, progress, stage)
    parts, ok = [], True
    for lo, hi in sorted(reused + missing):  # every entry is checked, so one retry rebuilds all bad ones
      arrays = store.load(lo, hi)
      if arrays is None:
        progress.line(f"[{stage}] cache entry for seeds {lo}-{hi} was corrupt: rebuilding it")
        ok = False
      elif ok:
        parts.append(arrays)
    if ok:  # entries every chunk holds (chunks stored before a stage recorded more keep their keys)
      keys = [k for k in parts[0] if all(k in p for p in parts[1:])]
      return StageOutput({k: np.concatenate([p[k] for p in parts]) for k in keys}, store.directory,
                         list(store.rebuilt), computed)
  raise ProtocolError(f"could not assemble stage {stage!r} from {store.directory} (entries keep failing checksums)")


def seed_chunks(stage: str, runner: seeds.SeedRunner, root: jax.Array, num: int, shared: Sequence[Any],
                store: checkpoint.ChunkStore, to_host: Callable[[Any], dict[str, np.ndarray]], config,
                progress: Optional[Progress] = None) -> StageOutput:
  """A stage computed by ``runner`` on seed keys ``seed_keys(root, ...)``: :func:`run_chunks` with chunks of the
  runner's size (``config``: its run options: processes and wait timeout)."""
  chunk = runner.chunk_bounds(num)[0][1] if num else 1
  if runner.strategy == "shard":
    chunk = runner.chunk_size or num
  compute = lambda lo, hi: to_host(runner.run_chunk(seeds.seed_keys(root, hi - lo, start=lo), *shared))
  return run_chunks(stage, store, num, compute, lambda: chunk_plan(store, num, chunk),
                    process_index=config.process_index, process_count=config.process_count,
                    wait_timeout_s=config.wait_timeout_s, progress=progress)
