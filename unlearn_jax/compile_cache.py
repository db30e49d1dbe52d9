"""JAX's persistent compilation cache, so that running the same command again does not recompile.

Most of a fully cached ``evaluate`` (and of ``score``) is XLA compilation. With the
persistent cache, each compiled program is written to a directory and a later
process compiling the same program (same computation, shapes, backend, jax
version and flags) loads it instead. ``evaluate`` keeps it under its model cache
(``<cache-dir>/jax-compilation``); the other commands use :func:`default_dir`.
Every command takes ``--no-compile-cache``; the library's
:class:`unlearn_jax.protocol.run.EvalConfig` has ``compile_cache``.

Entries are written for every compilation, however short: JAX by default keeps
only programs that took over a second to compile, which would skip most of the
small programs a run compiles.

The directory is trusted like code: JAX runs what it loads from there, so it
must not be writable by anyone you would not let run programs as you.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Iterator, Optional

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

SUBDIR = "jax-compilation"
# Settings this module changes while the cache is on (and restores afterwards).
_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")


def default_dir() -> str:
  """``$XDG_CACHE_HOME/unlearn_jax/jax-compilation`` (``~/.cache`` when unset), beside the tuned strategies."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "unlearn_jax", SUBDIR)


def dir_under(cache_root: str) -> str:
  """The compilation cache kept under a model cache directory."""
  return os.path.join(cache_root, SUBDIR)


@contextlib.contextmanager
def persistent_cache(path: Optional[str]) -> Iterator[Optional[str]]:
  """Compilations inside the block are looked up in, and written to, ``path`` (``None``: unchanged).

  JAX's previous settings are restored on exit, so compilations after the block
  do not write to ``path``. JAX creates the directory at the first compilation, so a
  command that fails on its input before compiling anything leaves no directory behind.
  """
  if path is None:
    yield None
    return
  path = os.path.abspath(path)
  saved = {name: getattr(jax.config, name) for name in _SETTINGS}
  _jax_cache.reset_cache()  # JAX opens its cache once per process; reopen it at the new path
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size threshold
  try:
    yield path
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)
    _jax_cache.reset_cache()


def add_flag(parser) -> None:
  """Adds ``--no-compile-cache`` (``args.compile_cache`` is ``False`` when given, absent otherwise)."""
  parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false", default=argparse.SUPPRESS,
                      help=f"do not use JAX's persistent compilation cache in {default_dir()} (a second run of the "
                           f"same command then compiles everything again)")


def for_command(args, cache_root: Optional[str] = None):
  """The :func:`persistent_cache` context of a command: under ``cache_root`` if given, else the default."""
  if not getattr(args, "compile_cache", True):
    return persistent_cache(None)
  return persistent_cache(dir_under(cache_root) if cache_root else default_dir())
