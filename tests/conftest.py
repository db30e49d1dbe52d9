"""Shared pytest fixtures.

Strictness: pyproject turns warnings into errors. JAX's
``jax_numpy_rank_promotion="raise"`` is not switched on here: Flax and Optax
pass with it, but the library's torch-semantics ``BatchNorm``
(``models/layers.py``) still broadcasts ``[C]`` statistics against
``[N, H, W, C]`` activations implicitly.
"""

from __future__ import annotations

import shutil
import tempfile

import jax
import pytest

from unlearn_jax import compile_cache

_SESSION_CACHE: list[str] = []  # this process's compilation cache folder (set in pytest_configure)


def pytest_configure(config: pytest.Config) -> None:
  """A persistent XLA compilation cache private to this test process.

  Many tests build the same programs afresh (new ``jax.jit`` wrappers around the same
  training step, one CLI run after another); with the cache each is compiled once per
  process and loaded afterwards. A loaded executable is the one compiled earlier, so no
  number changes. The folder is this process's own (one per xdist worker, never shared,
  not passed to subprocesses) and is deleted at the end of the session.
  """
  cache = tempfile.mkdtemp(prefix="unlearn-jax-test-xla-")
  _SESSION_CACHE[:] = [cache]
  config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(autouse=True, scope="session")
def one_compile_cache():
  """In-process evaluations compile into the session's cache, not one under each run's cache folder.

  ``evaluate`` keeps its compilation cache under its model cache
  (:func:`unlearn_jax.compile_cache.dir_under`), and almost every test gives its run a
  fresh ``--cache-dir``, so each in-process run would compile every program again.
  Here they share this process's cache. Where a command's cache lives is tested in
  subprocesses (``test_compile_cache.py``, ``test_accelerator_script.py``), which this
  does not reach.
  """
  patch = pytest.MonkeyPatch()
  patch.setattr(compile_cache, "dir_under", lambda cache_root: _SESSION_CACHE[0])
  yield
  patch.undo()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
  """With ``pytest -n`` (xdist, ``--dist loadgroup`` from pyproject): the tests of a module that
  share a module-scoped fixture (trained models, a cache of runs) go to one worker, which builds
  that fixture once; every other test is dealt out on its own."""
  if not config.pluginmanager.hasplugin("xdist"):
    return
  for item in items:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    if any(d and d[-1].scope == "module" for d in defs):
      item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture
def key() -> jax.Array:
  """A fixed PRNG key, so every test draws the same numbers on every run."""
  return jax.random.key(0)


@pytest.fixture(autouse=True, scope="session")
def private_tune_file(tmp_path_factory):
  """Tuned choices go to a file of this test session, never to the user's ``~/.cache``.

  Set in the environment, so CLI subprocesses inherit it; tests that check the file
  itself still point ``UNLEARN_JAX_TUNE_FILE`` at their own ``tmp_path``.
  """
  patch = pytest.MonkeyPatch()
  patch.setenv("UNLEARN_JAX_TUNE_FILE", str(tmp_path_factory.mktemp("tune") / "strategies.json"))
  yield
  patch.undo()
