"""The persistent compilation cache (a second process does not recompile) and throttled progress lines."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from unlearn_jax import compile_cache
from unlearn_jax.protocol.config import from_dict
from unlearn_jax.results.progress import Progress
from unlearn_jax.commands import evaluate as evaluate_cmd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs ``unlearn-jax ARGS`` in this process and prints the compilation-cache events JAX
# reported as one JSON line (hits: executables loaded from the cache instead of compiled).
_COUNTING_MAIN = """
import collections, json, sys
import jax.monitoring
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
from unlearn_jax import cli
rc = cli.main(sys.argv[1:])
print(json.dumps({"rc": rc, "hits": events["/jax/compilation_cache/cache_hits"],
                  "requests": events["/jax/compilation_cache/compile_requests_use_cache"]}))
"""


def _score(tmp_path, *extra):
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _COUNTING_MAIN, "score", "--unlearned", str(tmp_path / "u.npz"),
                         "--retrained", str(tmp_path / "r.npz"), *extra],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  return json.loads(lines[-1]), lines[0]


def _entries(path):
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_second_process_loads_every_program_from_the_cache(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "u.npz", confs=rng.normal(size=(6, 5)))
  np.savez(tmp_path / "r.npz", confs=rng.normal(size=(6, 5)))
  cache = tmp_path / "xdg" / "unlearn_jax" / compile_cache.SUBDIR

  first, first_line = _score(tmp_path)
  written = _entries(cache)
  assert first["hits"] == 0 and first["requests"] > 0 and len(written) == first["requests"]  # short ones too
  second, second_line = _score(tmp_path)
  assert second["hits"] == second["requests"] == first["requests"]  # nothing compiled again
  assert _entries(cache) == written
  assert first_line == second_line  # the same forgetting quality


def test_no_compile_cache_flag_leaves_jax_alone(tmp_path, monkeypatch):
  import jax
  import jax.numpy as jnp

  from unlearn_jax import cli

  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  args = cli.build_parser().parse_args(["score", "--unlearned", "u", "--retrained", "r", "--no-compile-cache"])
  before = jax.config.jax_compilation_cache_dir
  with compile_cache.for_command(args):
    assert jax.config.jax_compilation_cache_dir == before
    jax.jit(lambda x: x * 7.0 + 3.0)(jnp.ones(5)).block_until_ready()
  assert not _entries(compile_cache.default_dir())
  args = cli.build_parser().parse_args(["score", "--unlearned", "u", "--retrained", "r"])
  with compile_cache.for_command(args) as path:
    assert path == compile_cache.default_dir() == str(tmp_path / "unlearn_jax" / compile_cache.SUBDIR)


def test_cache_is_only_used_inside_the_block(tmp_path):
  import jax
  import jax.numpy as jnp

  before = jax.config.jax_compilation_cache_dir
  with compile_cache.persistent_cache(str(tmp_path / "c")) as path:
    assert jax.config.jax_compilation_cache_dir == path
    jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(7)).block_until_ready()
  inside = _entries(path)
  assert inside and jax.config.jax_compilation_cache_dir == before
  jax.jit(lambda x: x * 5.0 - 2.0)(jnp.ones(9)).block_until_ready()
  assert _entries(path) == inside


def test_evaluate_flag_and_config_key_reach_eval_config():
  parser = __import__("unlearn_jax.cli", fromlist=["build_parser"]).build_parser()
  on = from_dict(evaluate_cmd.resolve_config(parser.parse_args(["evaluate"])))
  off = from_dict(evaluate_cmd.resolve_config(
      parser.parse_args(["evaluate", "--no-compile-cache"])))
  via_set = from_dict(evaluate_cmd.resolve_config(
      parser.parse_args(["evaluate", "--set", "compile_cache=false"])))
  assert on.compile_cache is True and off.compile_cache is False and via_set.compile_cache is False


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_progress_rate_skips_the_compiling_chunk_and_lines_are_throttled():
  stream, clock = io.StringIO(), _Clock()
  progress = Progress(stream, interval_s=5.0, clock=clock)
  # 8 chunks of 4 models: the first takes 20 s (compilation), the others 1 s each.
  elapsed = 0.0
  for j in range(8):
    elapsed += 20.0 if j == 0 else 1.0
    clock.now = elapsed
    progress.chunk("retrained", 4 * (j + 1), 32, 4 * (j + 1), elapsed)
  lines = stream.getvalue().splitlines()
  assert lines[0] == "[retrained] models 4/32  first chunk 20.0 s (includes compilation)"
  # Next lines: not before 5 s have passed (t = 25: chunk 6), then the last chunk (t = 27).
  assert lines[1:] == ["[retrained] models 24/32  4.00 models/s  ETA 2 s",
                       "[retrained] models 32/32  4.00 models/s  ETA 0 s"]


def test_progress_prints_a_single_chunk_stage_and_restarts_per_stage():
  stream, clock = io.StringIO(), _Clock()
  progress = Progress(stream, interval_s=5.0, clock=clock)
  progress.chunk("original", 1, 1, 1, 3.0)
  clock.now = 1.0
  progress.chunk("unlearn", 2, 4, 2, 1.0)
  clock.now = 1.5
  progress.chunk("unlearn", 4, 4, 4, 1.5)
  assert stream.getvalue().splitlines() == [
      "[original] models 1/1  first chunk 3.0 s (includes compilation)",
      "[unlearn] models 2/4  first chunk 1.0 s (includes compilation)",
      "[unlearn] models 4/4  4.00 models/s  ETA 0 s"]
  silent = Progress(io.StringIO(), enabled=False)
  silent.chunk("x", 1, 1, 1, 1.0)
  assert silent.stream.getvalue() == ""


def test_progress_counts_blocks_throttled_with_an_eta_after_the_first():
  stream, clock = io.StringIO(), _Clock()
  progress = Progress(stream, interval_s=5.0, clock=clock)
  # 10 blocks of 100 pairs: the first done at t = 30 (compilation), then one every 2 s
  for k in range(10):
    clock.now = 30.0 + 2.0 * k
    progress.count("bootstrap", 100 * (k + 1), 1000, "pairs")
  # a second pass of the stage (done falls back) starts over with its first block
  clock.now = 100.0
  progress.count("bootstrap", 500, 1000, "pairs")
  clock.now = 101.0
  progress.count("bootstrap", 1000, 1000, "pairs")
  lines = stream.getvalue().splitlines()
  # after the first block: 50 pairs/s; printed again once 5 s have passed (t = 36, 400 done), then
  # t = 42 (700 done) and the last block
  assert lines == ["[bootstrap] pairs 100/1000",
                   "[bootstrap] pairs 400/1000  ETA 12 s",
                   "[bootstrap] pairs 700/1000  ETA 6 s",
                   "[bootstrap] pairs 1000/1000  ETA 0 s",
                   "[bootstrap] pairs 500/1000",
                   "[bootstrap] pairs 1000/1000  ETA 0 s"]
