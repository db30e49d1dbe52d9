"""The context of one evaluation, built once and never changed: data, split, model, recipe, the concrete
convolution lowering and seed strategy, and the cache keys they define.

:func:`build_context` makes every choice up front (the lowering and the strategy may be
measured on this device, :mod:`unlearn_jax.tuning`), so every stage of a run, and every
method scored against one reference, sees the same context.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from unlearn_jax import plugins, seeds, tuning
from unlearn_jax.protocol import original as original_io
from unlearn_jax.data import make_splits
from unlearn_jax.data.synthetic import load_data
from unlearn_jax.models import COMPUTE_DTYPES, get_model
from unlearn_jax.protocol.config import EvalConfig, resolve_recipe, validate
from unlearn_jax.results.progress import Progress
from unlearn_jax.training import Recipe
from unlearn_jax.training.recipes import check_total_steps
from unlearn_jax.unlearning import UnlearningMethod

CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SeedPlan:
  """How the seed axis runs: a concrete strategy, its chunk size and where the choice came from."""

  strategy: str
  chunk_size: Optional[int]
  source: str


@dataclasses.dataclass(frozen=True)
class Context:
  """Loaded data, model, recipe, the concrete lowering and seed plan, and the keys that name the cache entries."""

  config: EvalConfig
  data: Any
  indices: dict[str, np.ndarray]
  model: Any
  recipe: Recipe
  fingerprint: str
  seed_plan: SeedPlan
  conv_impl_source: str = "given"
  given_original: Optional[original_io.GivenOriginal] = None  # --original: path, format, SHA-256

  def key_parts(self, kind: str) -> dict[str, Any]:
    """The parts of the cache key of ``kind`` (``original`` / ``retrained``): the setup only."""
    c = self.config
    parts = dict(kind=kind, version=CACHE_VERSION, dataset=c.dataset, data=self.fingerprint, split=c.split,
                 model=plugins.model_key(c.model), conv_impl=c.conv_impl, recipe=self.recipe, seed=c.seed)
    if c.dtype != "float32":  # float32 keys stay as they were before the option existed
      parts["dtype"] = c.dtype
    if kind == "original" and self.given_original is not None:  # --original: keyed by the file's contents
      parts["given_original"] = self.given_original.sha256
    if kind == "retrained" and not c.cache_params:  # entries without parameters: their own key (default unchanged)
      parts["cache_params"] = False
    return parts

  def replace_config(self, **changes: Any) -> "Context":
    """This context with config fields that do not change the setup replaced (e.g. ``output_dir``)."""
    config = dataclasses.replace(self.config, **changes)
    if config.setup != self.config.setup:
      raise ValueError("a context's setup cannot change; build a new context")
    return dataclasses.replace(self, config=config)


@dataclasses.dataclass(frozen=True)
class BuiltMethod:
  """A method built for a context's model, with its origin (a user's file: name, path, content hash; else ``None``)."""

  method: UnlearningMethod
  origin: Optional[dict[str, Any]] = None

  @property
  def name(self) -> str:
    return self.method.name


def fingerprint(dataset) -> str:
  """A short digest of a dataset's contents, split indices and normalisation."""
  h = hashlib.sha256()
  for a in (dataset.images, dataset.labels, dataset.groups, dataset.train_idx, dataset.test_idx):
    h.update(np.ascontiguousarray(a).tobytes())
  for a in (dataset.val_idx, dataset.forget_idx):
    h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
  h.update(repr((dataset.scale, dataset.mean, dataset.std)).encode())
  return h.hexdigest()[:16]


def tune_options(config: EvalConfig, progress: Optional[Progress] = None) -> dict[str, Any]:
  """Where measured choices live, who measures them, and where the measurement's lines go.

  A single process uses the per-user file. In a multi-process run every process
  must use the same chunks (the cache entries are per chunk) and the same
  convolution lowering (it keys the cache), so process 0 measures and stores its
  choice in the shared cache directory and the others wait for it there.
  """
  opts: dict[str, Any] = {}
  if progress is not None:
    opts["log"] = lambda line: progress.line(f"[tune] {line}")
  if config.process_count > 1:
    opts.update(path=os.path.join(config.cache_dir, "tuned-strategies.json"),
                measure_here=config.process_index == 0, wait_s=config.wait_timeout_s)
  return opts


def workload_of(config: EvalConfig, data, recipe: Recipe) -> tuning.Workload:
  """What one seed trains, as :mod:`unlearn_jax.tuning` measures it."""
  return tuning.Workload.of_run(config.model, data, config.recipe, recipe, config.conv_impl, config.dtype)


def plan_seeds(config: EvalConfig, data, recipe: Recipe, progress: Optional[Progress] = None) -> SeedPlan:
  """Resolves ``auto``/``tune`` (measuring on this device if needed; sharding over the local
  devices when there are several, see :func:`unlearn_jax.tuning.plan_strategy`)."""
  c = config
  strategy, chunk, source = tuning.plan_strategy(c.strategy, c.chunk_size, c.model, workload_of(c, data, recipe),
                                                c.num_models, len(jax.local_devices()), tune_options(c, progress))
  # only chunked and shard programs have a chunk size (loop runs 1 seed, vmap all of them)
  return SeedPlan(strategy, chunk if strategy in ("chunked", "shard") else None, source)


def build_context(config: EvalConfig, progress: Optional[Progress] = None,
                  before_planning: Optional[Callable[[EvalConfig, Any, Recipe], None]] = None) -> Context:
  """Checks ``config``, loads the dataset, makes the split, builds the model and recipe, and fixes the
  convolution lowering and the seed plan (``progress``: the tuner's lines).

  ``before_planning(config, model, recipe)`` runs once the model exists and before the seed plan,
  which may measure (compile and run) programs on this device: callers build their methods there,
  so that a method that cannot be built costs nothing and writes nothing.
  """
  validate(config)
  dataset = load_data(config.dataset, config.data_dir)
  indices, data = make_splits(dataset, config.split)
  recipe = resolve_recipe(config.recipe, config.recipe_overrides)
  for split in ("retain",) if config.original is not None else ("train", "retain"):  # the splits trained on
    check_total_steps(recipe, int(data.split(split).shape[0]), split)
  conv_impl, conv_source = tuning.resolve_conv_impl(config.conv_impl, workload_of(config, data, recipe),
                                                      max_chunk=seeds.seeds_per_device(config.num_models),
                                                      **tune_options(config, progress))
  config = dataclasses.replace(config, conv_impl=conv_impl)  # cache keys name the concrete lowering
  model = get_model(config.model, data.num_classes, conv_impl=conv_impl, dtype=COMPUTE_DTYPES[config.dtype])
  if before_planning is not None:
    before_planning(config, model, recipe)
  plan = plan_seeds(config, data, recipe, progress)
  given = original_io.describe(config.original) if config.original is not None else None  # --original
  return Context(config, data, indices, model, recipe, fingerprint(dataset), plan, conv_impl_source=conv_source,
                 given_original=given)


def build_method(ctx: Context, hyperparameters: Optional[Mapping[str, Any]] = None,
                 method: Any = None) -> BuiltMethod:
  """The configured method (``method`` replaces the config's), hyperparameters validated (``hyperparameters``
  replace the config's), the context's recipe given to ``retrain``."""
  return build_method_for(ctx.config, ctx.model, ctx.recipe, hyperparameters, method)


def build_method_for(config: EvalConfig, model, recipe: Recipe, hyperparameters: Optional[Mapping[str, Any]] = None,
                     method: Any = None) -> BuiltMethod:
  """:func:`build_method` for a model and recipe not yet in a context (see ``build_context``'s ``before_planning``)."""
  hp = dict(config.hyperparameters if hyperparameters is None else hyperparameters)
  built, origin = plugins.build_method(config.method if method is None else method, model, hp, recipe=recipe)
  return BuiltMethod(built, origin)


def make_runner(fn, ctx: Context) -> seeds.SeedRunner:
  """A :class:`~unlearn_jax.seeds.SeedRunner` for ``fn`` following the context's seed plan."""
  return seeds.SeedRunner(fn, ctx.seed_plan.strategy, ctx.seed_plan.chunk_size, source=ctx.seed_plan.source)
