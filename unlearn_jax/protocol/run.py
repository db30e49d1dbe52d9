"""The competition's evaluation protocol, finished in one place: :func:`evaluate`.

``evaluate(config)`` runs the whole protocol for one unlearning method and is what
``unlearn-jax evaluate``, :func:`unlearn_jax.evaluate` and every sweep point call:

1. train (or reuse) the **original** model: one seed, the recipe on the train split;
2. train (or reuse) **N retrained** models: the recipe on the retain split, seed
   ``i`` keyed by ``fold_in(fold_in(root, RETRAIN), i)``;
3. run **N unlearning** runs from the original, seed ``i`` keyed by
   ``fold_in(fold_in(root, UNLEARN), i)``;
4. measure every model's retain / forget / test accuracy, the logit-scaled
   confidence of each forget example and per-example losses (for the simple
   MIA), inside the same vmapped program that trains it;
5. score them (:mod:`unlearn_jax.protocol.scoring`), run every requested evaluation
   (:mod:`unlearn_jax.analysis.evaluators`: U-LiRA, KLOM, bootstrap, the ceiling, the
   no-op check) and write ``results.json``, ``populations.npz`` and the plots.

Steps 1-2 are the :class:`Reference` (:func:`prepare`), shared by every method scored on
one setup; :func:`evaluate_on` runs steps 3-5 for one method against it (a sweep calls it
once per point).

Caching and resuming: the original model, the retrained models' parameters and
every model's outputs are stored per chunk of seeds with
:class:`unlearn_jax.checkpoint.ChunkStore` under a key of the dataset contents,
the split, the model, the recipe and the seed, so any later method (and any
larger ``N``) reuses them. Unlearning chunks are stored under the output
directory, keyed by the method and its hyperparameters, so a killed run
restarted with the same command continues from its last completed chunk; the
per-seed keys make every seed's result independent of where the run resumed.

Multi-process: every process runs the same call; the chunks still to compute
are dealt round-robin (chunk ``j`` to process ``j % P``, :mod:`unlearn_jax.protocol.runner`),
each process writes its chunks into the shared cache, waits until all exist, and process 0
scores and writes the results. Nothing crosses processes except files, so results
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

import contextlib
import dataclasses
import os
import tempfile
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from unlearn_jax import checkpoint, compile_cache, files, metrics, plugins
from unlearn_jax.analysis import evaluators
from unlearn_jax.analysis.degenerate import DegeneracyCheck
from unlearn_jax.data import splits as data_splits
from unlearn_jax.protocol import budget, margins, runner, scoring, stages
from unlearn_jax.protocol.config import EvalConfig, validate
from unlearn_jax.protocol.context import BuiltMethod, Context, build_context, build_method, build_method_for
from unlearn_jax.protocol.errors import ProtocolError
from unlearn_jax.protocol.stages import OriginalModel, Population, STREAM_ORIGINAL, STREAM_RETRAIN, STREAM_UNLEARN
from unlearn_jax.results import ceiling, diagnostics, populations, report, setups
from unlearn_jax.results.progress import Progress
from unlearn_jax.results.record import (Evaluation, Populations, accuracy_summary, describe_hyperparameters,
                                        device_description, jsonable, mia_summary)
from unlearn_jax.training import describe_training
from unlearn_jax.unlearning import SetSizes, UnlearningMethod


@dataclasses.dataclass
class Reference:
  """What every method scored on one setup shares: the context, the original and the retrained models.

  Built once by :func:`prepare`; :func:`evaluate_on` scores any number of methods (or
  hyperparameter points) against it without touching the original or retrained stages
  again, and computes the setup's ceiling against it when asked (:func:`ceiling_of`).

  Attributes:
    ctx: the context; root: the root key of the run.
    original: the original model; retrained: the N retrained models (with their margins
      under ``retain_margin`` / ``heldout_margin`` when KLOM asked for them).
    margin_subsets: KLOM's fixed retain / held-out subsets (``None``: no margins).
    walls: seconds spent per shared stage (``load``, ``original``, ``retrained``, ``margins``).
    rebuilt: corrupt cache entries found and rebuilt by the shared stages.
  """

  ctx: Context
  root: jax.Array
  original: OriginalModel
  retrained: Population
  margin_subsets: Optional[dict[str, np.ndarray]] = None
  walls: dict[str, float] = dataclasses.field(default_factory=dict)
  rebuilt: list[str] = dataclasses.field(default_factory=list)

  @property
  def cache(self) -> dict[str, Any]:
    """The ``cache`` record of the shared stages (folders of the original and retrained models)."""
    return {"original": self.original.directory, "original_reused": self.original.cached,
            "retrained": self.retrained.directory}


def prepare(ctx: Context, progress: Optional[Progress] = None, load_s: float = 0.0) -> Reference:
  """Trains (or reuses from the cache) the original and the N retrained models of ``ctx``'s setup
  (and their margins when ``ctx.config.metrics`` asks for KLOM). ``load_s``: seconds spent building ``ctx``.

  Raises:
    ProtocolError: the retrained models are not finite.
  """
  progress = progress or Progress()
  config = ctx.config
  walls: dict[str, float] = {"load": load_s}
  root = jax.random.key(config.seed)
  t0 = time.perf_counter()
  original = stages.original_model(ctx, jax.random.fold_in(root, STREAM_ORIGINAL), progress)
  walls["original"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  retrained = stages.retrained_models(ctx, jax.random.fold_in(root, STREAM_RETRAIN), progress)
  walls["retrained"] = time.perf_counter() - t0
  bad = scoring.nonfinite_seeds(retrained.outputs)
  if bad.size:
    raise ProtocolError(f"retrained models are not finite on seeds {bad.tolist()}; check the recipe")
  rebuilt = original.rebuilt + retrained.rebuilt
  subsets = None
  if "klom" in config.metrics:
    subsets = margins.subset_indices(ctx.data, config.split.seed, config.margin_examples)
    t0 = time.perf_counter()
    measured = stages.retrained_margins(ctx, retrained, subsets, progress)
    retrained = dataclasses.replace(retrained, outputs={**retrained.outputs, **measured.outputs})
    rebuilt += measured.rebuilt
    walls["margins"] = time.perf_counter() - t0
  return Reference(ctx, root, original, retrained, subsets, walls, rebuilt)


def compile_cache_dir(config: EvalConfig) -> Optional[str]:
  """Where ``config``'s run keeps JAX's persistent compilation cache (``None``: off)."""
  return compile_cache.dir_under(config.cache_dir) if config.compile_cache else None


def evaluate(config: EvalConfig, progress: Optional[Progress] = None) -> Optional[Evaluation]:
  """Runs the whole protocol for ``config``: the one path that finishes an evaluation.

  Returns the :class:`~unlearn_jax.results.record.Evaluation` (process 0) or ``None`` (other
  processes). With ``config.output_dir`` set, ``results.json``, ``populations.npz`` (and
  the plots, ``config.plots``) are written there; with ``None``, nothing is written but
  the model cache.

  Raises:
    ValueError: bad arguments or data (one-line messages).
    ProtocolError: the method diverged on some seeds (without ``allow_nan_drop``),
      or too few seeds remain.
  """
  progress = progress or Progress()
  validate(config)  # before any folder is made
  budget.attach(progress, config.max_hours)  # the estimate after each stage's first chunk, and --max-hours
  if config.output_dir is not None:
    files.check_output_folder(config.output_dir)  # outputs replace only regular files: refused before any work
  with compile_cache.persistent_cache(compile_cache_dir(config)):
    t0 = time.perf_counter()
    built: list[BuiltMethod] = []  # bad hyperparameters or a failing factory stop before anything runs
    ctx = build_context(config, progress, lambda c, model, recipe: built.append(build_method_for(c, model, recipe)))
    method = built[0]
    ref = prepare(ctx, progress, load_s=time.perf_counter() - t0)
    return evaluate_on(ref, method, progress)


def ceiling_of(ref: Reference, progress: Optional[Progress] = None) -> dict[str, Any]:
  """The setup's ceiling at N: the stored one, else F of ``retrain`` (default hyperparameters, its own
  unlearning seed stream) computed against ``ref``'s retrained models and stored.

  Only the N extra retrained models (cached under ``<retrained store>/ceiling/``) and the metric
  cost time; the original, the retrained models and the data are the ones already in memory.

  Raises:
    ProtocolError: the extra models are not finite.
  """
  progress = progress or Progress()
  n = ref.ctx.config.num_models
  stored = ceiling.read(ref.retrained.directory, n)
  if stored is not None:
    return stored
  ctx = ref.ctx.replace_config(method=ceiling.CEILING_METHOD, hyperparameters=(), unlearn_seed=None,
                               allow_nan_drop=False, output_dir=os.path.join(ref.retrained.directory, "ceiling"))
  method = build_method(ctx, {})
  progress.line(f"[ceiling] evaluating {ceiling.CEILING_METHOD} as the method (N={n}) for the ceiling")
  extra = stages.unlearned_models(ctx, method, ref.original, jax.random.fold_in(ref.root, STREAM_UNLEARN), progress)
  bad = scoring.nonfinite_seeds(extra.outputs)
  if bad.size:
    raise ProtocolError(f"the ceiling's retrained models are not finite on seeds {bad.tolist()}; check the recipe")
  scores = scoring.score(extra.outputs, ref.retrained.outputs)
  ceiling.write(ref.retrained.directory, n, scores.forgetting_quality, scores.final_score, ref.ctx.config.seed,
                extra.directory)
  stored = ceiling.read(ref.retrained.directory, n)
  if stored is None:
    raise ProtocolError(f"could not read back the ceiling file {ceiling.ceiling_path(ref.retrained.directory, n)}")
  return stored


def ceiling_outputs(stored: Optional[dict[str, Any]]) -> Optional[dict[str, np.ndarray]]:
  """The ceiling run's per-model outputs (``forget_confidence`` ``[N, E]``, margins where stored), all
  N of the stored ceiling's models, from its chunks; ``None`` when they are not (all) stored."""
  n = int((stored or {}).get("num_models") or 0)
  source = (stored or {}).get("unlearned_chunks")
  if not (isinstance(source, str) and os.path.isdir(source) and n):
    return None
  store = checkpoint.ChunkStore(source)
  ranges, missing = runner.chunk_plan(store, n, n)
  parts = [store.load(lo, hi) for lo, hi in ranges] if not missing else [None]
  if not parts or any(p is None for p in parts):
    return None
  return {k[len("out/"):]: np.concatenate([p[k] for p in parts]) for k in parts[0] if k.startswith("out/")}


def ceiling_at(stored: dict[str, Any], keep: np.ndarray, retrained: dict[str, np.ndarray],
               progress: Optional[Progress] = None,
               outputs: Optional[dict[str, np.ndarray]] = None) -> Optional[dict[str, Any]]:
  """The stored ceiling rescored on the seeds ``keep`` only (its extra models and ``retrained``, the reference
  models at those seeds), so that a result scored after dropping diverged seeds is compared at its own N.

  ``outputs``: the ceiling's :func:`ceiling_outputs` where the caller has loaded them (else read here).
  ``None`` (with a progress line) when the ceiling's models are no longer stored.
  """
  outputs = ceiling_outputs(stored) if outputs is None else outputs
  if outputs is None:
    if progress is not None:
      progress.line(f"[ceiling] the ceiling's models are not stored at {stored.get('unlearned_chunks')}; "
                    f"no ceiling at N={keep.size}")
    return None
  arrays = outputs["forget_confidence"]
  n = int(stored["num_models"])
  fq = float(metrics.forgetting_quality(arrays[keep], retrained["forget_confidence"]))
  return dict(stored, forgetting_quality=fq, num_models=int(keep.size), subsampled_from=n)


def _built(ctx: Context, method: Any) -> BuiltMethod:
  if isinstance(method, BuiltMethod):
    return method
  if isinstance(method, UnlearningMethod):
    return BuiltMethod(method, plugins.resolve_method(method).origin)
  return build_method(ctx, method=method)


def evaluate_on(ref: Reference, method: Any, progress: Optional[Progress] = None, *,
                output_dir: Any = ..., unlearn_seed: Optional[int] = None,
                allow_nan_drop: Optional[bool] = None, plots: Optional[bool] = None) -> Optional[Evaluation]:
  """Runs the unlearning stage of ``method`` against ``ref``, scores it, runs every evaluation
  ``ref.ctx.config`` asks for and writes the outputs; returns the evaluation (process 0) or ``None``.

  ``method``: a :class:`~unlearn_jax.protocol.context.BuiltMethod` from :func:`build_method` on
  ``ref.ctx`` (which records a user's method's origin), a built ``UnlearningMethod``, or anything
  a config's ``method`` may be. ``output_dir`` (where the resumable unlearning chunks and the
  outputs go; ``None``: a temporary folder, nothing written), ``unlearn_seed``,
  ``allow_nan_drop`` and ``plots`` replace the config's for this method only. The ``wall_s``
  record counts the shared stages of ``ref`` as they were spent (once) plus this method's own.
  """
  progress = progress or Progress()
  changes = {k: v for k, v in dict(unlearn_seed=unlearn_seed, allow_nan_drop=allow_nan_drop, plots=plots).items()
             if v is not None}
  if output_dir is not ...:
    changes["output_dir"] = output_dir
  ctx = ref.ctx.replace_config(**changes)
  if ctx.config.plots and ctx.config.output_dir is None:
    raise ValueError("plots need an output directory to be written to; give output_dir or turn plots off")
  method = _built(ctx, method)
  with contextlib.ExitStack() as stack:
    if ctx.config.output_dir is None:
      scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="unlearn_jax_chunks_"))
      return _evaluate_on(ref, dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, output_dir=scratch)),
                          method, progress, write=False)
    return _evaluate_on(ref, ctx, method, progress, write=True)


def _evaluate_on(ref: Reference, ctx: Context, method: BuiltMethod, progress: Progress,
                 write: bool) -> Optional[Evaluation]:
  config = ctx.config
  m = method.method
  walls = dict(ref.walls)
  t_start = time.perf_counter()
  sizes = SetSizes(int(ctx.data.retain.shape[0]), int(ctx.data.forget.shape[0]), int(ctx.data.validation.shape[0]))
  progress.line(f"evaluating {m.name} on {config.dataset} ({config.model}, recipe {config.recipe}, "
                f"N={config.num_models}; retain {sizes.retain}, forget {sizes.forget}, test "
                f"{int(ctx.data.test.shape[0])})")
  progress.line(f"[method] {m.name}: {describe_hyperparameters(m.hyperparameters)}")
  seed_u = config.seed if config.unlearn_seed is None else config.unlearn_seed
  root_u = ref.root if seed_u == config.seed else jax.random.key(seed_u)

  budget.forecast(progress, "unlearn", config.num_models, "retrained", m.cost(sizes) / ctx.recipe.epochs)
  t0 = time.perf_counter()
  unlearned = stages.unlearned_models(ctx, method, ref.original, jax.random.fold_in(root_u, STREAM_UNLEARN),
                                      progress, ref.margin_subsets)
  walls["unlearn"] = time.perf_counter() - t0
  if config.process_index != 0:
    return None

  keep = scoring.kept_seeds(unlearned.outputs, m.name, config.allow_nan_drop)
  dropped = np.setdiff1d(np.arange(config.num_models), keep).tolist()
  u_out, r_out = unlearned.outputs, ref.retrained.outputs
  if dropped:
    progress.line(f"[unlearn] dropping {len(dropped)} diverged seed(s) {dropped} from both populations")
    u_out = {k: v[keep] for k, v in u_out.items()}
    r_out = {k: v[keep] for k, v in r_out.items()}

  t0 = time.perf_counter()
  n_scored = int(keep.size)
  progress.line(f"[metric] scoring {n_scored} unlearned vs {n_scored} retrained models on {sizes.forget} "
                f"forget examples")
  scores = scoring.score(u_out, r_out)
  walls["metric"] = time.perf_counter() - t0
  progress.line(f"[metric] done in {walls['metric']:.1f} s")
  kept_diagnostics = {k: v[keep] for k, v in unlearned.diagnostics.items()}
  pops = Populations(u_out, r_out, scores.epsilons, np.asarray(ref.original.outputs["forget_confidence"]),
                     kept_diagnostics)

  record = _record(ref, ctx, method, sizes, scores, n_scored, dropped, seed_u, unlearned, u_out, r_out)
  if _is_ceiling_run(ctx, method, seed_u, dropped):
    ceiling.write(ref.retrained.directory, config.num_models, scores.forgetting_quality, scores.final_score,
                  config.seed, unlearned.directory)
  stored = ceiling.read(ref.retrained.directory, config.num_models)
  if stored is None and config.with_ceiling:
    t0 = time.perf_counter()
    stored = ceiling_of(ref, progress)
    walls["ceiling"] = time.perf_counter() - t0
    progress.line(f"[ceiling] done in {walls['ceiling']:.1f} s: F_ceiling {stored['forgetting_quality']:.4f}")
  extras = config.bootstrap or "klom" in config.metrics  # the ceiling's interval and KLOM's baseline
  # the ceiling's stored models, read once: rescored at the kept seeds, and the extras at the scored seeds
  full = ceiling_outputs(stored) if stored is not None and (dropped or extras) else None
  if stored is not None and dropped:  # F / F_ceiling at one N: the ceiling's models at the kept seeds
    stored = ceiling_at(stored, keep, r_out, progress, outputs=full)
  extra = None
  if stored is not None and extras and full is not None:
    # margins only where the reference has them at the same shape (subsets drawn from the split seed and
    # their count alone: the same examples)
    extra = {k: v[keep] for k, v in full.items() if k in r_out and v[keep].shape == np.shape(r_out[k])}
    if "forget_confidence" not in extra:
      extra = None
  request = evaluators.Request(metrics=tuple(config.metrics), bootstrap=config.bootstrap, seed=config.seed,
                               forgetting_quality=scores.forgetting_quality, ceiling=stored, ceiling_outputs=extra,
                               budget=lambda stage: budget.pairs(progress, stage), progress=progress)
  attacks = [name for name in ("ulira", "klom") if name in config.metrics]
  if attacks:
    progress.line(f"[evaluations] {' and '.join(attacks)} on {n_scored} unlearned and {n_scored} retrained models")
  found = {}
  for name, evaluator in evaluators.EVALUATORS.items():  # each timed as its own stage of wall_s
    stage = "bootstrap" if name == "bootstrap" or (name == "ceiling" and config.bootstrap) else "evaluations"
    if name == "bootstrap" and config.bootstrap:
      progress.line(f"[bootstrap] {config.bootstrap} model and {config.bootstrap} example draws on {n_scored} models")
    t0 = time.perf_counter()
    value = evaluator(pops, request)
    if value is not None:
      found[name] = value
      walls[stage] = walls.get(stage, 0.0) + time.perf_counter() - t0
    if name == "klom_baseline" and attacks:  # the last of the many-model attacks in EVALUATORS' order
      progress.line(f"[evaluations] {' and '.join(attacks)} done in {walls.get('evaluations', 0.0):.1f} s")
  if "bootstrap" in walls:
    progress.line(f"[bootstrap] done in {walls['bootstrap']:.1f} s")
  progress.line(f"[check] {DegeneracyCheck.from_dict(found['degenerate']).message(m.name)}")
  record.update(found)
  record["wall_s"] = walls
  evaluation = Evaluation(record, pops)
  t_write = time.perf_counter()

  def close_walls():  # the total ends with the last output before results.json, which records it
    if write:
      walls["write"] = time.perf_counter() - t_write
    walls["total"] = sum(ref.walls.values()) + time.perf_counter() - t_start

  if write:
    evaluation.paths = write_outputs(evaluation, config.output_dir, config.plots, before_results=close_walls)
  else:
    close_walls()
  return evaluation


def _is_ceiling_run(ctx: Context, method: BuiltMethod, seed_u: int, dropped: list[int]) -> bool:
  """Whether a scored method is the ceiling: the registry's ``retrain`` with its default hyperparameters,
  on its own unlearning seed stream, every seed scored."""
  m = method.method
  if method.origin is not None or m.name != ceiling.CEILING_METHOD or seed_u != ctx.config.seed or dropped:
    return False
  default = build_method(ctx, {}, method=ceiling.CEILING_METHOD).method
  return m.source == default.source and jsonable(dict(m.hyperparameters)) == jsonable(dict(default.hyperparameters))


def reference_setup(ref: Reference, num_models: Optional[int] = None) -> dict[str, Any]:
  """The ``setup`` record of results scored against ``ref`` with ``num_models`` models (default: N)."""
  ctx, config = ref.ctx, ref.ctx.config
  return setups.make_setup(dataset=config.dataset, data_fingerprint=ctx.fingerprint,
                           model=plugins.model_key(config.model),
                           recipe={"name": config.recipe, **jsonable(dataclasses.asdict(ctx.recipe))},
                           split=jsonable(dataclasses.asdict(config.split)), dtype=config.dtype,
                           num_models=config.num_models if num_models is None else num_models)


def split_record(ctx: Context) -> dict[str, Any]:
  """The ``split`` (the split's settings, ``--split-seed`` included) and ``split_people`` (people per split and
  the overlaps; ``None`` for data without person ids) fields of ``results.json``, from the splits ``ctx`` uses."""
  return {"split": jsonable(dataclasses.asdict(ctx.config.split)),
          "split_people": data_splits.group_counts(np.asarray(ctx.data.groups), ctx.indices)}


def _record(ref: Reference, ctx: Context, method: BuiltMethod, sizes: SetSizes, scores: scoring.Scores,
            n_scored: int, dropped: list[int], seed_u: int, unlearned: Population, u_out: dict[str, np.ndarray],
            r_out: dict[str, np.ndarray]) -> dict[str, Any]:
  """The ``results.json`` fields of one scored method (the evaluations are added after)."""
  config = ctx.config
  m = method.method
  cost = m.cost(sizes)
  setup = reference_setup(ref, n_scored)
  original_out = ref.original.outputs
  record = {
      "method": m.name,
      "hyperparameters": {k: jsonable(v) for k, v in dict(m.hyperparameters).items()},
      "source": m.source,
      "dataset": config.dataset,
      "model": config.model,
      "recipe": setup["recipe"],
      "training": describe_training(ctx.recipe, ctx.data),
      **split_record(ctx),
      "set_sizes": dataclasses.asdict(sizes) | {"test": int(ctx.data.test.shape[0])},
      "num_models": config.num_models,
      "setup": setup,
      "num_models_scored": n_scored,
      "dropped_seeds": dropped,
      "seed": config.seed,
      "unlearn_seed": seed_u,
      "forgetting_quality": scores.forgetting_quality,
      "final_score": scores.final_score,
      "per_example_epsilons": scores.epsilons.tolist(),
      "unlearned": accuracy_summary(u_out),
      "retrained": accuracy_summary(r_out),
      "original": {k: float(np.asarray(original_out[k])) for k in ("retain_accuracy", "forget_accuracy",
                                                                    "test_accuracy")}
                  | ({"kept_epoch": int(original_out["kept_epoch"])} if "kept_epoch" in original_out else {}),
      "mia": mia_summary(scores.mia_unlearned, scores.mia_retrained),
      "diagnostics": diagnostics.summarise({k: v[np.isin(np.arange(len(v)), dropped, invert=True)]
                                          for k, v in unlearned.diagnostics.items()}),
      "cost": {"r_ep": cost, "recipe_epochs": ctx.recipe.epochs, "relative_to_retrain": cost / ctx.recipe.epochs},
      "wall_s": {},
      "device": device_description(),
      "jax": jax.__version__,
      "strategy": dataclasses.asdict(ctx.seed_plan),
      "conv_impl": {"impl": config.conv_impl, "source": ctx.conv_impl_source},
      "cache": {**ref.cache, "unlearned": unlearned.directory, "rebuilt": ref.rebuilt + unlearned.rebuilt},
  }
  if ref.margin_subsets is not None:
    record["margin_examples"] = {k: int(v.shape[0]) for k, v in ref.margin_subsets.items()}
  if ctx.given_original is not None:  # --original
    record["original"]["given"] = ctx.given_original.record()
  if method.origin is not None:
    record["method_origin"] = method.origin
  if plugins.is_spec(config.model):
    record["model_origin"] = plugins.model_record(config.model)
  record["method_defaults"] = dict(config.method_defaults)
  record["metrics"] = list(config.metrics)
  return record


def write_outputs(evaluation: Evaluation, output_dir: str, plots: bool,
                  before_results: Optional[Callable[[], None]] = None) -> dict[str, Any]:
  """Writes ``populations.npz``, the plots (``plots``) and ``results.json`` (last: its presence marks
  the evaluation finished) under ``output_dir``; returns their paths. ``before_results()`` is called
  just before ``results.json`` is written (the run closes its wall times there)."""
  os.makedirs(output_dir, exist_ok=True)
  paths: dict[str, Any] = {"populations": populations.write_populations(evaluation, output_dir)}
  if plots:
    paths["plots"] = report.write_plots(evaluation.record, output_dir, populations=evaluation.populations)
  if before_results is not None:
    before_results()
  paths["results"] = report.write_results(evaluation.record, output_dir)
  return paths
