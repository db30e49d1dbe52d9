"""The competition's evaluation protocol as library functions.

``evaluate(config)`` runs the whole protocol for one unlearning method:

1. train (or reuse) the **original** model: one seed, the recipe on the train split;
2. train (or reuse) **N retrained** models: the recipe on the retain split, seed
   ``i`` keyed by ``fold_in(fold_in(root, RETRAIN), i)``;
3. run **N unlearning** runs from the original, seed ``i`` keyed by
   ``fold_in(fold_in(root, UNLEARN), i)``;
4. measure every model's retain / forget / test accuracy, the logit-scaled
   confidence of each forget example and per-example losses (for the simple
   MIA), inside the same vmapped program that trains it;
5. score them with :mod:`unlearn_jax.metrics` (:func:`score` is the only call).

Caching and resuming: the original model, the retrained models' parameters and
every model's outputs are stored per chunk of seeds with
:class:`unlearn_jax.checkpoint.ChunkStore` under a key of the dataset contents,
the split, the model, the recipe and the seed, so any later method (and any
larger ``N``) reuses them. Unlearning chunks are stored under the output
directory, keyed by the method and its hyperparameters, so a killed run
restarted with the same command continues from its last completed chunk; the
per-seed keys make every seed's result independent of where the run resumed.

Multi-process: every process runs the same call; the chunks still to compute
are dealt round-robin (chunk ``j`` to process ``j % P``), each process writes
its chunks into the shared cache, waits until all exist, and process 0 scores
and writes the results. Nothing crosses processes except files, so results
equal a single-process run chunk for chunk. ``jax.distributed.initialize`` is
used only for process identity and start-up rendezvous: no cross-process
collective runs, so the protocol does not depend on JAX's CPU multi-process
collectives (tested with two local CPU processes). The cache directory must be
shared by all processes (one host, or a network file system).

Host/device split: training, unlearning and per-model measurements run under
JAX (one program per chunk); cache I/O, the NaN check, scoring orchestration
and reports are host NumPy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import (autotune, checkpoint, compile_cache, degenerate, diagnostics, evaluations, margins, plugins,
                         seeds, setups)
from unlearn_jax._validate import check_seed
from unlearn_jax.data import Dataset, SplitSpec, load_dataset, make_splits
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES, get_model
from unlearn_jax.training import RECIPES, Recipe, accuracy, describe_training, make_predict_fn, make_train_fn
from unlearn_jax.training.losses import per_example_cross_entropy
from unlearn_jax.unlearning import ModelState, SetSizes, UnlearningMethod
from unlearn_jax.unlearning import outputs as unlearning_outputs

CACHE_VERSION = 1
STREAM_ORIGINAL, STREAM_RETRAIN, STREAM_UNLEARN = 0, 1, 2
OUTPUT_NAMES = ("retain_accuracy", "forget_accuracy", "test_accuracy", "forget_confidence", "forget_loss",
                "test_loss")


class ProtocolError(ValueError):
  """A user-facing failure of the protocol (diverged method, too few seeds, ...)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Everything one evaluation needs. Library functions take this, never argparse.

  Attributes:
    dataset, data_dir: the data source and its files (if any).
    model, recipe: registry names (``model`` may also be a user's ``path/to/file.py:make`` or
      ``module:make``, see :mod:`unlearn_jax.plugins`); ``recipe_overrides`` replaces recipe fields.
    split: the forget/retain/validation/test split.
    method: an entry of :data:`unlearn_jax.unlearning.METHODS`, a user's ``path/to/file.py:make``
      or ``module:make``, a factory ``make(model, **hp)``, or a built ``UnlearningMethod``;
      ``hyperparameters`` override the factory's defaults (checked against its declarations).
    num_models: N, the number of retrained and of unlearned models.
    seed: root seed of every key in the run.
    unlearn_seed: root seed of the unlearning runs only (``None``: ``seed``); a different
      value draws a fresh stream of unlearned models against the same original and
      retrained models (``sweep --confirm``).
    strategy, chunk_size: how :class:`~unlearn_jax.seeds.SeedRunner` runs the seed axis
      (``auto``: the measured table, or a measurement on this device where the table has
      no row; ``tune``: always measure; see :mod:`unlearn_jax.autotune`).
    conv_impl: convolution lowering: ``gemm``, ``xla`` or ``auto`` (the measured default of
      this backend, or both timed on the device where there is none).
    dtype: compute dtype, ``float32`` or ``bfloat16`` (mixed precision: parameters,
      BatchNorm statistics and losses stay float32).
    cache_dir: root of the model cache; output_dir: where results go.
    cache_params: also store the retrained models' parameters.
    allow_nan_drop: drop seeds whose unlearned model is not finite instead of failing.
    process_index, process_count: this process among ``process_count`` running the same call.
    metrics: evaluations to compute (:data:`unlearn_jax.evaluations.METRIC_NAMES`); ``klom``
      makes the measurement stages record margins on ``margin_examples`` retain and held-out
      examples (see :mod:`unlearn_jax.margins`).
    compile_cache: keep JAX's persistent compilation cache under ``cache_dir/jax-compilation``
      (:mod:`unlearn_jax.compile_cache`), so running the same evaluation again skips compilation.
  """

  dataset: str = "digits"
  data_dir: Optional[str] = None
  model: str = "mlp"
  recipe: str = "digits"
  recipe_overrides: tuple[tuple[str, Any], ...] = ()
  split: SplitSpec = SplitSpec()
  method: str | UnlearningMethod | Callable[..., UnlearningMethod] = "finetune"
  hyperparameters: tuple[tuple[str, Any], ...] = ()
  num_models: int = 512
  seed: int = 0
  unlearn_seed: Optional[int] = None
  strategy: str = "auto"
  chunk_size: Optional[int] = None
  conv_impl: str = "auto"
  dtype: str = "float32"
  cache_dir: str = "unlearn_cache"
  output_dir: str = "results"
  cache_params: bool = True
  allow_nan_drop: bool = False
  process_index: int = 0
  process_count: int = 1
  wait_timeout_s: float = 3600.0
  metrics: tuple[str, ...] = ("competition",)
  margin_examples: int = margins.DEFAULT_MARGIN_EXAMPLES
  compile_cache: bool = True


# ------------------------------------------------------------------ context


@dataclasses.dataclass
class Context:
  """Loaded data, model, recipe and the keys that name the cache entries."""

  config: EvalConfig
  data: Any
  indices: dict[str, np.ndarray]
  model: Any
  recipe: Recipe
  fingerprint: str
  seed_plan: Optional["SeedPlan"] = None  # filled by plan_seeds on first use
  conv_impl_source: str = "given"
  progress: Optional["Progress"] = None
  method_origin: Optional[dict[str, Any]] = None  # a user's method: name, source file, content hash

  def key_parts(self, kind: str) -> dict[str, Any]:
    c = self.config
    parts = dict(kind=kind, version=CACHE_VERSION, dataset=c.dataset, data=self.fingerprint, split=c.split,
                 model=plugins.model_key(c.model), conv_impl=c.conv_impl, recipe=self.recipe, seed=c.seed)
    if c.dtype != "float32":  # float32 keys stay as they were before the option existed
      parts["dtype"] = c.dtype
    return parts


def resolve_recipe(name: str, overrides: Sequence[tuple[str, Any]] = ()) -> Recipe:
  """Recipe ``name`` from the registry with ``overrides`` applied (``min_save_epoch``s kept below ``epochs``)."""
  if name not in RECIPES:
    raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}")
  recipe = RECIPES[name]()
  overrides = dict(overrides)
  unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Recipe)})
  if unknown:
    raise ValueError(f"unknown recipe field(s) {unknown}; expected fields of Recipe")
  if "epochs" in overrides:
    clamped = recipe.with_epochs(overrides["epochs"])
    for name in ("min_save_epoch", "retrain_min_save_epoch"):
      overrides.setdefault(name, getattr(clamped, name))
  return recipe.replace(**overrides) if overrides else recipe


def _fingerprint(dataset) -> str:
  h = hashlib.sha256()
  for a in (dataset.images, dataset.labels, dataset.groups, dataset.train_idx, dataset.test_idx):
    h.update(np.ascontiguousarray(a).tobytes())
  for a in (dataset.val_idx, dataset.forget_idx):
    h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
  h.update(repr((dataset.scale, dataset.mean, dataset.std)).encode())
  return h.hexdigest()[:16]


def random_cifar10(data_dir: Optional[str] = None, num_train: int = 50_000, num_test: int = 10_000) -> Dataset:
  """Random uint8 images of CIFAR-10's shape (32x32x3, 10 classes, 50k/10k): for timing without the data.

  Labels are random too, so accuracies sit near chance; use it to measure
  throughput and memory of the full-size protocol, never to judge a method.
  """
  del data_dir
  rng = np.random.default_rng(1234)
  m = num_train + num_test
  return Dataset(name="random_cifar10", images=rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, m).astype(np.int32), groups=np.full(m, -1, np.int32), num_classes=10,
                 train_idx=np.arange(num_train), test_idx=np.arange(num_train, m), scale=1.0 / 255.0,
                 mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


SYNTHETIC = {"random_cifar10": random_cifar10}


def load_data(name: str, data_dir: Optional[str] = None) -> Dataset:
  """A registered source (:func:`unlearn_jax.data.load_dataset`) or a synthetic one from :data:`SYNTHETIC`."""
  if name in SYNTHETIC:
    return SYNTHETIC[name](data_dir)
  return load_dataset(name, data_dir)


def validate(config: EvalConfig) -> None:
  """Checks every argument that can be checked without loading data."""
  from unlearn_jax.data import SOURCES
  from unlearn_jax.models import MODELS
  if config.dataset not in SOURCES and config.dataset not in SYNTHETIC and not config.dataset.startswith("tfds:"):
    raise ValueError(f"unknown dataset {config.dataset!r}; expected one of {sorted(SOURCES) + sorted(SYNTHETIC)} "
                     f"or tfds:<name>")
  plugins.validate_method(config.method, dict(config.hyperparameters))  # before anything is trained
  if plugins.is_spec(config.model):
    plugins.load_factory(config.model, "model")
  elif config.model not in MODELS:
    raise ValueError(f"unknown model {config.model!r}; expected one of {sorted(MODELS)} or path/to/file.py:factory")
  check_seed("--seed", config.seed)
  if config.unlearn_seed is not None:
    check_seed("unlearn seed", config.unlearn_seed)
  if int(config.num_models) != config.num_models or config.num_models < 2:
    raise ValueError(f"--num-models must be an integer >= 2 (the metric compares two populations), "
                     f"got {config.num_models}")
  if config.strategy not in seeds.STRATEGIES:
    raise ValueError(f"unknown seed strategy {config.strategy!r}; expected one of {list(seeds.STRATEGIES)}")
  if config.chunk_size is not None and config.chunk_size < 1:
    raise ValueError(f"--chunk-size must be >= 1, got {config.chunk_size}")
  if config.conv_impl not in CONV_IMPL_CHOICES:
    raise ValueError(f"unknown conv impl {config.conv_impl!r}; expected one of {list(CONV_IMPL_CHOICES)}")
  if config.dtype not in COMPUTE_DTYPES:
    raise ValueError(f"unknown compute dtype {config.dtype!r}; expected one of {sorted(COMPUTE_DTYPES)}")
  if not 0 <= config.process_index < config.process_count:
    raise ValueError(f"process index must lie in [0, {config.process_count}), got {config.process_index}")
  if config.data_dir is not None and not os.path.isdir(config.data_dir):
    raise ValueError(f"data directory {config.data_dir!r} does not exist or is not a directory")
  if config.data_dir is not None and not os.access(config.data_dir, os.R_OK | os.X_OK):
    raise ValueError(f"data directory {config.data_dir!r} is not readable")
  resolve_recipe(config.recipe, config.recipe_overrides)
  evaluations.check_metrics(config.metrics)
  if int(config.margin_examples) != config.margin_examples or config.margin_examples < 1:
    raise ValueError(f"margin_examples must be an integer >= 1, got {config.margin_examples}")


def build_context(config: EvalConfig, progress: Optional["Progress"] = None) -> Context:
  """Loads the dataset, makes the split, builds the model and recipe (``progress``: tuning lines)."""
  validate(config)
  dataset = load_data(config.dataset, config.data_dir)
  indices, data = make_splits(dataset, config.split)
  recipe = resolve_recipe(config.recipe, config.recipe_overrides)
  conv_impl, conv_source = autotune.resolve_conv_impl(config.conv_impl, workload_of(config, data, recipe),
                                                      max_chunk=seeds.seeds_per_device(config.num_models),
                                                      **tune_options(config, progress))
  config = dataclasses.replace(config, conv_impl=conv_impl)  # cache keys name the concrete lowering
  model = get_model(config.model, data.num_classes, conv_impl=conv_impl, dtype=COMPUTE_DTYPES[config.dtype])
  return Context(config, data, indices, model, recipe, _fingerprint(dataset), conv_impl_source=conv_source,
                 progress=progress)


def tune_options(config: EvalConfig, progress: Optional["Progress"] = None) -> dict[str, Any]:
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


def workload_of(config: EvalConfig, data, recipe: Recipe) -> autotune.Workload:
  """What one seed trains, as :mod:`unlearn_jax.autotune` measures it."""
  return autotune.Workload.of_run(config.model, data, config.recipe, recipe, config.conv_impl, config.dtype)


def build_method(ctx: Context, hyperparameters: Optional[Mapping[str, Any]] = None):
  """The configured method (hyperparameters validated, the pipeline's recipe given to ``retrain``);
  ``hyperparameters`` replace the config's. A user's method also sets ``ctx.method_origin``."""
  hp = dict(ctx.config.hyperparameters if hyperparameters is None else hyperparameters)
  method, ctx.method_origin = plugins.build_method(ctx.config.method, ctx.model, hp, recipe=ctx.recipe)
  return method


# ------------------------------------------------------------------ per-model measurements


def _metrics():
  from unlearn_jax import metrics
  return metrics


def make_measure_fn(model, eval_batch_size: int = 512,
                    margin_subsets: Optional[Mapping[str, np.ndarray]] = None) -> Callable[[Any, Any, Any], dict[str, jax.Array]]:
  """``measure(params, batch_stats, data) -> outputs`` of one model (eval mode).

  Outputs: ``retain_accuracy``, ``forget_accuracy``, ``test_accuracy`` (scalars),
  ``forget_confidence`` ``[F]`` (logit-scaled confidence of the true label),
  ``forget_loss`` ``[F]`` and ``test_loss`` ``[T]`` (per-example cross-entropy); with
  ``margin_subsets`` also ``retain_margin`` and ``heldout_margin`` (:mod:`unlearn_jax.margins`).
  """
  predict = make_predict_fn(model, eval_batch_size)
  confidence = _metrics().logit_scaled_confidence

  def measure(params, batch_stats, data):
    out = {}
    for split in ("retain", "forget", "test"):
      idx = data.split(split)
      logits = predict(params, batch_stats, data, idx)
      labels = data.labels[idx]
      out[f"{split}_accuracy"] = accuracy(logits, labels)
      if split == "forget":
        out["forget_confidence"] = confidence(logits, labels).astype(jnp.float32)
        out["forget_loss"] = per_example_cross_entropy(logits, labels)
      elif split == "test":
        out["test_loss"] = per_example_cross_entropy(logits, labels)
    if margin_subsets is not None:
      out.update(margins.margin_outputs(predict, params, batch_stats, data, margin_subsets))
    return out

  return measure


# ------------------------------------------------------------------ progress


class Progress:
  """Per-chunk progress lines on ``stream``: models done, models/s, ETA.

  The first chunk a stage computes includes compiling its program, so the rate and
  the ETA come only from the chunks after it (no ETA until one has run). Lines of a
  stage are printed at most every ``interval_s`` seconds of ``clock``; its first
  computed chunk and its last chunk are always printed.
  """

  def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True, interval_s: float = 5.0,
               clock: Callable[[], float] = time.monotonic):
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = enabled
    self.interval_s = interval_s
    self.clock = clock
    self._stages: dict[str, dict[str, Any]] = {}

  def line(self, text: str) -> None:
    if self.enabled:
      print(text, file=self.stream, flush=True)

  def chunk(self, stage: str, done: int, total: int, computed: int, elapsed: float) -> None:
    """After a chunk: ``done`` of ``total`` models ready, ``computed`` of them in ``elapsed`` s by this run."""
    state = self._stages.get(stage)
    if state is None or computed <= state["computed"]:  # a new pass over the stage (or a retry)
      state = self._stages[stage] = dict(first=(computed, elapsed), computed=0, printed=None)
    state["computed"] = computed
    c0, e0 = state["first"]
    now = self.clock()
    final = done >= total
    if not final and state["printed"] is not None and now - state["printed"] < self.interval_s:
      return
    state["printed"] = now
    if computed == c0:
      self.line(f"[{stage}] models {done}/{total}  first chunk {elapsed:.1f} s (includes compilation)")
      return
    rate = (computed - c0) / (elapsed - e0) if elapsed > e0 else float("nan")
    eta = (total - done) / rate if rate == rate and rate > 0 else float("nan")
    eta_text = f"{eta:.0f} s" if eta == eta else "?"
    self.line(f"[{stage}] models {done}/{total}  {rate:.2f} models/s  ETA {eta_text}")


# ------------------------------------------------------------------ chunked stages


def _plan(store: checkpoint.ChunkStore, num: int, chunk: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
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


def _wait_for(store: checkpoint.ChunkStore, ranges: Sequence[tuple[int, int]], timeout: float,
              progress: Progress, stage: str) -> None:
  deadline = time.monotonic() + timeout
  pending = [r for r in ranges if not store.exists(*r)]
  if pending:
    progress.line(f"[{stage}] waiting for {len(pending)} chunk(s) from other processes")
  while pending:
    if time.monotonic() > deadline:
      raise ProtocolError(f"timed out after {timeout:.0f} s waiting for chunks {pending} in {store.directory}")
    time.sleep(0.2)
    pending = [r for r in pending if not store.exists(*r)]


def run_chunked(stage: str, runner: seeds.SeedRunner, root: jax.Array, num: int, shared: Sequence[Any],
                store: checkpoint.ChunkStore, to_host: Callable[[Any], dict[str, np.ndarray]],
                config: EvalConfig, progress: Progress) -> dict[str, np.ndarray]:
  """Runs (or reuses) ``num`` seeds of ``runner`` chunk by chunk and returns stacked host arrays.

  Each computed chunk is saved atomically before the next starts; chunks are
  dealt round-robin over ``config.process_count`` processes.
  """
  chunk = runner.chunk_bounds(num)[0][1] if num else 1
  if runner.strategy == "shard":
    chunk = runner.chunk_size or num
  for attempt in range(3):  # corrupt files found while assembling are all rebuilt, then assembly is retried
    reused, missing = _plan(store, num, chunk)
    if reused and not missing and attempt == 0:
      progress.line(f"[{stage}] {num} models from cache {store.directory}")
    mine = [r for j, r in enumerate(missing) if j % config.process_count == config.process_index]
    done = sum(hi - lo for lo, hi in reused)
    computed, t0 = 0, time.perf_counter()
    for lo, hi in mine:
      keys = seeds.seed_keys(root, hi - lo, start=lo)
      out = to_host(runner.run_chunk(keys, *shared))
      store.save(lo, hi, out, {"stage": stage})
      computed += hi - lo
      done += hi - lo
      progress.chunk(stage, done, num, computed, time.perf_counter() - t0)
    _wait_for(store, missing, config.wait_timeout_s, progress, stage)
    parts, ok = [], True
    for lo, hi in sorted(reused + missing):  # every entry is checked, so one retry rebuilds all bad ones
      arrays = store.load(lo, hi)
      if arrays is None:
        progress.line(f"[{stage}] cache entry for seeds {lo}-{hi} was corrupt: rebuilding it")
        ok = False
      elif ok:
        parts.append(arrays)
    if ok:
      return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  raise ProtocolError(f"could not assemble stage {stage!r} from {store.directory} (entries keep failing checksums)")


def _split_outputs(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k[len("out/"):]: v for k, v in flat.items() if k.startswith("out/")}


@dataclasses.dataclass(frozen=True)
class SeedPlan:
  """How the seed axis runs: a concrete strategy, its chunk size and where the choice came from."""

  strategy: str
  chunk_size: Optional[int]
  source: str


def plan_seeds(ctx: Context) -> SeedPlan:
  """Resolves ``auto``/``tune`` once per context (measuring on this device if needed;
  sharding over the local devices when there are several, see :func:`seeds.plan_strategy`)."""
  if ctx.seed_plan is None:
    c = ctx.config
    strategy, chunk, source = seeds.plan_strategy(c.strategy, c.chunk_size, c.model,
                                                  workload_of(c, ctx.data, ctx.recipe), c.num_models,
                                                  len(jax.local_devices()), tune_options(c, ctx.progress))
    # only chunked and shard programs have a chunk size (loop runs 1 seed, vmap all of them)
    ctx.seed_plan = SeedPlan(strategy, chunk if strategy in ("chunked", "shard") else None, source)
  return ctx.seed_plan


def make_runner(fn, ctx: Context) -> seeds.SeedRunner:
  """A :class:`SeedRunner` for ``fn`` following :func:`plan_seeds`."""
  plan = plan_seeds(ctx)
  return seeds.SeedRunner(fn, plan.strategy, plan.chunk_size, model_name=ctx.config.model)


# ------------------------------------------------------------------ stages


def original_model(ctx: Context, root: jax.Array, cache_root: str, progress: Progress):
  """The original model (cached): ``(ModelState, outputs, cache dir, was_cached, rebuilt entries)``."""
  parts = ctx.key_parts("original")
  store = checkpoint.ChunkStore(os.path.join(cache_root, f"original-{checkpoint.cache_key(parts)}"),
                                checkpoint.describe(parts))
  measure = make_measure_fn(ctx.model)
  arrays = store.load_entry("model")
  cached = arrays is not None
  for err in store.rebuilt:
    progress.line(f"[original] corrupt cache entry rebuilt: {err}")
  if arrays is None:
    t0 = time.perf_counter()
    train = make_train_fn(ctx.model, ctx.recipe, split="train")

    @jax.jit
    def fn(key, data):
      res = train(key, data)
      out = dict(measure(res.params, res.batch_stats, data), kept_epoch=res.best_epoch)
      return dict(params=res.params, batch_stats=res.batch_stats, out=out)

    result = fn(jax.random.fold_in(root, 0), ctx.data)
    arrays = checkpoint.flatten_tree(result)
    if ctx.config.process_index == 0:
      store.save_entry("model", arrays)
    progress.line(f"[original] trained 1 model in {time.perf_counter() - t0:.1f} s")
  else:
    progress.line(f"[original] from cache {store.directory}")
  state = ModelState(jax.tree.map(jnp.asarray, checkpoint.unflatten_tree(arrays, "params/")),
                     jax.tree.map(jnp.asarray, checkpoint.unflatten_tree(arrays, "batch_stats/")))
  return state, _split_outputs(arrays), store.directory, cached, list(store.rebuilt)


def retrained_models(ctx: Context, root: jax.Array, cache_root: str, progress: Progress):
  """Outputs of the N retrained models (cached per chunk): ``(outputs, cache dir, rebuilt list)``."""
  parts = ctx.key_parts("retrained")
  store = checkpoint.ChunkStore(os.path.join(cache_root, f"retrained-{checkpoint.cache_key(parts)}"),
                                checkpoint.describe(parts))
  train = make_train_fn(ctx.model, ctx.recipe, split="retain")
  measure = make_measure_fn(ctx.model)
  keep = ctx.config.cache_params

  def fn(key, data):
    res = train(key, data)
    out = dict(out=measure(res.params, res.batch_stats, data))
    if keep:
      out.update(params=res.params, batch_stats=res.batch_stats)
    return out

  runner = make_runner(fn, ctx)
  flat = run_chunked("retrained", runner, root, ctx.config.num_models, (ctx.data,), store,
                     checkpoint.flatten_tree, ctx.config, progress)
  return _split_outputs(flat), store.directory, list(store.rebuilt)


def unlearned_models(ctx: Context, method, original: ModelState, root: jax.Array, original_key: str,
                     progress: Progress, margin_subsets: Optional[Mapping[str, np.ndarray]] = None):
  """Outputs of the N unlearning runs (stored per chunk under the output directory for resuming):
  ``(outputs, chunk dir, rebuilt entries, diagnostics)``; ``diagnostics`` holds the method's
  ``UnlearnResult.metrics`` per seed (``{name: [N, ...]}``), stored in the same chunks."""
  parts = dict(kind="unlearned", version=CACHE_VERSION, original=original_key, method=method.name,
               hyperparameters=dict(method.hyperparameters), num_models=None, records="outputs+diagnostics")
  if margin_subsets is not None:  # keys of runs without margins stay as they were
    parts["margins"] = margins.subset_digest(margin_subsets)
  if ctx.config.unlearn_seed is not None and ctx.config.unlearn_seed != ctx.config.seed:
    parts["unlearn_seed"] = ctx.config.unlearn_seed  # default-seed keys stay as they were
  if ctx.method_origin is not None:  # a user's method: its file's contents are part of the key
    parts["origin"] = {"name": ctx.method_origin["name"], "sha256": ctx.method_origin["sha256"]}
  key = checkpoint.cache_key(parts)
  folder = f"{plugins.safe_name(method.name)}-{key}"
  store = checkpoint.ChunkStore(os.path.join(ctx.config.output_dir, "chunks", folder),
                                checkpoint.describe(parts))
  measure = make_measure_fn(ctx.model, margin_subsets=margin_subsets)

  def fn(key, original, data):
    res = method.unlearn(original, data, key)
    unlearning_outputs.check_result(method.name, original, res)  # at trace time: structure, shapes, dtypes
    return dict(out=measure(res.state.params, res.state.batch_stats, data),
                diag=unlearning_outputs.diagnostics(method.name, res))

  runner = make_runner(fn, ctx)
  flat = run_chunked("unlearn", runner, root, ctx.config.num_models, (original, ctx.data), store,
                     checkpoint.flatten_tree, ctx.config, progress)
  return _split_outputs(flat), store.directory, list(store.rebuilt), diagnostics.from_flat(flat)


# ------------------------------------------------------------------ scoring


def nonfinite_seeds(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
  """Seeds (row indices) with any non-finite output."""
  bad = np.zeros(len(outputs["retain_accuracy"]), bool)
  for name in OUTPUT_NAMES:
    a = np.asarray(outputs[name]).reshape(len(bad), -1)
    bad |= ~np.isfinite(a).all(axis=1)
  return np.flatnonzero(bad)


def score(unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The one place the metric module is called: forgetting quality, epsilons, final score, MIA.

  The simple MIA needs at least 10 forget and 10 test examples; below that
  its entries are ``None`` (recorded, not an error).
  """
  m = _metrics()
  result = m.forgetting_metric(unlearned["forget_confidence"], retrained["forget_confidence"])
  fq = float(result.forgetting_quality)
  final = float(m.final_score(fq, unlearned["retain_accuracy"], retrained["retain_accuracy"],
                              unlearned["test_accuracy"], retrained["test_accuracy"]))
  mia = {}
  for name, out in (("unlearned", unlearned), ("retrained", retrained)):
    try:
      mia[name] = np.asarray(m.simple_mia(out["forget_loss"], out["test_loss"]), np.float64).reshape(-1)
    except ValueError:
      mia[name] = None
  return dict(forgetting_quality=fq, per_example_epsilons=np.asarray(result.epsilons, np.float64),
              final_score=final, mia_unlearned=mia["unlearned"], mia_retrained=mia["retrained"])


def device_description() -> str:
  """E.g. ``"cpu: 2 cores (x86_64), 1 local device(s), 1 process(es)"`` or ``"gpu: NVIDIA H100 x1"``."""
  devices = jax.devices()
  if devices[0].platform == "cpu":
    return f"cpu: {os.cpu_count()} cores ({platform.machine()}), {len(jax.local_devices())} local device(s), " \
           f"{jax.process_count()} process(es)"
  return f"{devices[0].platform}: {devices[0].device_kind} x{len(devices)}"


def _summary(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
  out = {}
  for name in ("retain_accuracy", "forget_accuracy", "test_accuracy"):
    a = np.asarray(outputs[name], np.float64).reshape(-1)
    out[name] = {"mean": float(a.mean()), "per_model": a.tolist()}
  return out


@dataclasses.dataclass
class Reference:
  """What every method scored on one setup shares: the context, the original and the retrained models.

  Built once by :func:`prepare`; :func:`evaluate_method` scores any number of
  methods (or hyperparameter points) against it without touching the original
  or retrained stages again.
  """

  ctx: Context
  root: jax.Array
  original: ModelState
  original_out: dict[str, np.ndarray]
  original_key: str
  retrained: dict[str, np.ndarray]
  cache: dict[str, Any]
  rebuilt: list[str]
  walls: dict[str, float]
  margin_subsets: Optional[dict[str, np.ndarray]] = None  # klom: the fixed retain/held-out subsets


def prepare(config: EvalConfig, progress: Optional[Progress] = None, context: Optional[Context] = None) -> Reference:
  """Loads the data and trains (or reuses from the cache) the original and the N retrained models.

  ``context``: one already built from ``config`` by :func:`build_context` (callers
  that check their method against the model before any training pass it).

  Raises:
    ValueError: bad arguments or data (one-line messages).
    ProtocolError: the retrained models are not finite.
  """
  progress = progress or Progress()
  walls: dict[str, float] = {"load": 0.0}
  t0 = time.perf_counter()
  ctx = context if context is not None else build_context(config, progress)
  config = ctx.config
  walls["load"] = time.perf_counter() - t0
  root = jax.random.key(config.seed)

  t0 = time.perf_counter()
  original_key = checkpoint.cache_key(ctx.key_parts("original"))
  original, original_out, original_dir, original_cached, rebuilt_o = original_model(
      ctx, jax.random.fold_in(root, STREAM_ORIGINAL), config.cache_dir, progress)
  walls["original"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  retrained, retrained_dir, rebuilt_r = retrained_models(ctx, jax.random.fold_in(root, STREAM_RETRAIN),
                                                         config.cache_dir, progress)
  walls["retrained"] = time.perf_counter() - t0
  bad_r = nonfinite_seeds(retrained)
  if bad_r.size:
    raise ProtocolError(f"retrained models are not finite on seeds {bad_r.tolist()}; check the recipe")
  subsets = None
  if "klom" in config.metrics:
    subsets = margins.subset_indices(ctx.data, config.split.seed, config.margin_examples)
    t0 = time.perf_counter()
    retrained.update(margins.retrained_margins(
        ctx.model, ctx.data, retrained_dir, _plan(checkpoint.ChunkStore(retrained_dir), config.num_models,
                                                  config.num_models)[0], subsets, ctx.key_parts("retrained"),
        progress))
    walls["margins"] = time.perf_counter() - t0
  cache = {"original": original_dir, "original_reused": original_cached, "retrained": retrained_dir}
  return Reference(ctx, root, original, original_out, original_key, retrained, cache, rebuilt_o + rebuilt_r, walls,
                   subsets)


def evaluate(config: EvalConfig, progress: Optional[Progress] = None) -> Optional[dict[str, Any]]:
  """Runs the protocol; returns the results dict (process 0) or ``None`` (other processes).

  The dict also carries host arrays under ``"_arrays"`` (confidences and
  epsilons) for reports; :func:`unlearn_jax.report.write_results` strips them.

  Raises:
    ValueError: bad arguments or data (one-line messages).
    ProtocolError: the method diverged on some seeds (without ``allow_nan_drop``),
      or too few seeds remain.
  """
  progress = progress or Progress()
  with compile_cache.persistent_cache(compile_cache_dir(config)):
    t0 = time.perf_counter()
    ctx = build_context(config, progress)
    method = build_method(ctx)  # bad hyperparameters fail before any training
    load = time.perf_counter() - t0
    ref = prepare(config, progress, ctx)
    ref.walls["load"] = load
    return evaluate_method(ref, method, progress)


def compile_cache_dir(config: EvalConfig) -> Optional[str]:
  """Where ``config``'s run keeps JAX's persistent compilation cache (``None``: off)."""
  return compile_cache.dir_under(config.cache_dir) if config.compile_cache else None


def evaluate_method(ref: Reference, method, progress: Optional[Progress] = None, *,
                    output_dir: Optional[str] = None, unlearn_seed: Optional[int] = None,
                    allow_nan_drop: Optional[bool] = None) -> Optional[dict[str, Any]]:
  """Runs the unlearning and scoring stages of ``method`` against ``ref``; returns the results dict.

  ``method`` is built by :func:`build_method` on ``ref.ctx`` (which records a
  user's method's file and hash there, for the cache key and ``results.json``).

  ``output_dir`` (where the resumable unlearning chunks go), ``unlearn_seed``
  and ``allow_nan_drop`` replace the config's for this method only. The
  ``wall_s`` record counts the shared stages of ``ref`` as they were spent
  (once) plus this method's own stages.
  """
  progress = progress or Progress()
  changes = {k: v for k, v in dict(output_dir=output_dir, unlearn_seed=unlearn_seed,
                                   allow_nan_drop=allow_nan_drop).items() if v is not None}
  ctx = dataclasses.replace(ref.ctx, config=dataclasses.replace(ref.ctx.config, **changes))
  config = ctx.config
  retrained = ref.retrained
  walls = dict(ref.walls)
  t_start = time.perf_counter()
  sizes = SetSizes(int(ctx.data.retain.shape[0]), int(ctx.data.forget.shape[0]), int(ctx.data.validation.shape[0]))
  progress.line(f"evaluating {method.name} on {config.dataset} ({config.model}, recipe {config.recipe}, "
                f"N={config.num_models}; retain {sizes.retain}, forget {sizes.forget}, test "
                f"{int(ctx.data.test.shape[0])})")
  progress.line(f"[method] {method.name}: {_describe_hyperparameters(method.hyperparameters)}")
  seed_u = config.seed if config.unlearn_seed is None else config.unlearn_seed
  root_u = ref.root if seed_u == config.seed else jax.random.key(seed_u)

  t0 = time.perf_counter()
  unlearned, unlearned_dir, rebuilt_u, diag = unlearned_models(ctx, method, ref.original,
                                                               jax.random.fold_in(root_u, STREAM_UNLEARN),
                                                               ref.original_key, progress, ref.margin_subsets)
  walls["unlearn"] = time.perf_counter() - t0
  if config.process_index != 0:
    return None

  bad = nonfinite_seeds(unlearned)
  dropped: list[int] = []
  if bad.size:
    if not config.allow_nan_drop:
      raise ProtocolError(f"method {method.name!r} diverged (non-finite outputs) on {bad.size} of "
                          f"{config.num_models} seeds: {bad.tolist()}; pass --allow-nan-drop to drop them")
    dropped = bad.tolist()
    keep = np.setdiff1d(np.arange(config.num_models), bad)
    if keep.size < 2:
      raise ProtocolError(f"method {method.name!r} diverged on {bad.size} of {config.num_models} seeds; "
                          f"fewer than 2 remain")
    progress.line(f"[unlearn] dropping {bad.size} diverged seed(s) {dropped} from both populations")
    unlearned = {k: v[keep] for k, v in unlearned.items()}
    retrained = {k: v[keep] for k, v in retrained.items()}
    diag = {k: v[keep] for k, v in diag.items()}

  t0 = time.perf_counter()
  n_scored = len(unlearned["retain_accuracy"])
  progress.line(f"[metric] scoring {n_scored} unlearned vs {n_scored} retrained models on {sizes.forget} "
                f"forget examples")
  scores = score(unlearned, retrained)
  walls["metric"] = time.perf_counter() - t0
  progress.line(f"[metric] done in {walls['metric']:.1f} s")
  no_op = degenerate.check(unlearned["forget_confidence"], retrained["forget_confidence"],
                           ref.original_out["forget_confidence"])
  progress.line(f"[check] {no_op.message(method.name)}")
  walls["total"] = sum(ref.walls.values()) + time.perf_counter() - t_start
  eps = scores["per_example_epsilons"]
  cost = method.cost(sizes)
  results_recipe = {"name": config.recipe, **_jsonable(dataclasses.asdict(ctx.recipe))}
  results_split = _jsonable(dataclasses.asdict(config.split))
  results = {
      "method": method.name,
      "hyperparameters": {k: _jsonable(v) for k, v in dict(method.hyperparameters).items()},
      "source": method.source,
      "dataset": config.dataset,
      "model": config.model,
      "recipe": results_recipe,
      "training": describe_training(ctx.recipe, ctx.data),
      "split": results_split,
      "set_sizes": dataclasses.asdict(sizes) | {"test": int(ctx.data.test.shape[0])},
      "num_models": config.num_models,
      "setup": setups.make_setup(dataset=config.dataset, data_fingerprint=ctx.fingerprint,
                                 model=plugins.model_key(config.model),
                                 recipe=results_recipe, split=results_split, dtype=config.dtype,
                                 num_models=n_scored),
      "num_models_scored": int(len(unlearned["retain_accuracy"])),
      "dropped_seeds": dropped,
      "seed": config.seed,
      "unlearn_seed": seed_u,
      "forgetting_quality": scores["forgetting_quality"],
      "final_score": scores["final_score"],
      "per_example_epsilons": eps.tolist(),
      "unlearned": _summary(unlearned),
      "retrained": _summary(retrained),
      "original": {k: float(np.asarray(ref.original_out[k])) for k in ("retain_accuracy", "forget_accuracy",
                                                                         "test_accuracy")}
                  | ({"kept_epoch": int(ref.original_out["kept_epoch"])} if "kept_epoch" in ref.original_out else {}),
      "mia": _mia_summary(scores),
      "diagnostics": diagnostics.summarise(diag),
      "degenerate": no_op.as_dict(),
      "cost": {"r_ep": cost, "recipe_epochs": ctx.recipe.epochs, "relative_to_retrain": cost / ctx.recipe.epochs},
      "wall_s": walls,
      "device": device_description(),
      "jax": jax.__version__,
      "strategy": dataclasses.asdict(plan_seeds(ctx)),
      "conv_impl": {"impl": ctx.config.conv_impl, "source": ctx.conv_impl_source},
      "cache": {**ref.cache, "unlearned": unlearned_dir, "rebuilt": ref.rebuilt + rebuilt_u},
  }
  if ref.margin_subsets is not None:
    results["margin_examples"] = {k: int(v.shape[0]) for k, v in ref.margin_subsets.items()}
  if ctx.method_origin is not None:
    results["method_origin"] = ctx.method_origin
  if plugins.is_spec(config.model):
    results["model_origin"] = plugins.model_record(config.model)
  results["_arrays"] = {"unlearned_confidence": unlearned["forget_confidence"],
                        "retrained_confidence": retrained["forget_confidence"], "epsilons": eps,
                        "unlearned": unlearned, "retrained": retrained, "diagnostics": diag}
  return results


def _describe_hyperparameters(hp: Mapping[str, Any]) -> str:
  """``preset=kaggle lr=0.001 ...``: scalar hyperparameters as they ran (a recipe is named by the run line)."""
  plain = (bool, int, float, str, tuple, type(None))
  return " ".join(f"{k}={v}" for k, v in hp.items() if isinstance(v, plain)) or "-"


def _mia_summary(scores: Mapping[str, Any]) -> dict[str, Any]:
  u, r = scores["mia_unlearned"], scores["mia_retrained"]
  return {"unlearned": None if u is None else float(u.mean()), "retrained": None if r is None else float(r.mean()),
          "unlearned_per_model": None if u is None else u.tolist()}


def _jsonable(v: Any) -> Any:
  if isinstance(v, Mapping):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_jsonable(x) for x in v]
  if isinstance(v, (np.integer, np.floating)):
    return v.item()
  if dataclasses.is_dataclass(v) and not isinstance(v, type):
    return _jsonable(dataclasses.asdict(v))
  if v is None or isinstance(v, (bool, int, float, str)):
    return v
  return repr(v)
