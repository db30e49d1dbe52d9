"""What one evaluation is asked to do: :class:`EvalConfig`, its typed parts, translation from a config dict,
and every check that needs no data.

An :class:`EvalConfig` is the union of four typed parts, each a frozen dataclass:

* :class:`Setup`: what defines the reference population (data, split, model, recipe, dtype,
  N, root seed); the cache keys of the original and retrained models come from it alone;
* :class:`MethodChoice`: the method, its hyperparameters and its own seed stream;
* :class:`Evaluations`: what is computed beside the competition score (U-LiRA, KLOM,
  bootstrap intervals, the ceiling);
* :class:`RunOptions`: how and where it runs (seed strategy, cache and output folders,
  processes, plots); none of it changes a number.

``config.setup``, ``config.method_choice``, ``config.evaluations`` and ``config.run`` give
the parts; :meth:`EvalConfig.compose` builds a config from them. :func:`from_dict` is the one
translation of a config dict (``configs/default.py``'s keys) that the command line, the
Python API and sweeps share; :func:`validate` is the one check.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Sequence

from unlearn_jax import configs, plugins, seeds
from unlearn_jax._validate import check_seed
from unlearn_jax.analysis import evaluations
from unlearn_jax.data import SOURCES, SplitSpec
from unlearn_jax.data.synthetic import SYNTHETIC
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES, MODELS
from unlearn_jax.protocol import budget, margins, settings
from unlearn_jax.protocol.errors import ProtocolError  # noqa: F401  (part of this module's interface)
from unlearn_jax.training import RECIPES, Recipe
from unlearn_jax.unlearning import UnlearningMethod


@dataclasses.dataclass(frozen=True)
class Setup:
  """What defines the reference population; equal setups share original and retrained models.

  Attributes:
    dataset, data_dir: the data source and its files (if any).
    model, recipe: registry names (``model`` may also be a user's ``path/to/file.py:make`` or
      ``module:make``, see :mod:`unlearn_jax.plugins`); ``recipe_overrides`` replaces recipe fields.
    split: the forget/retain/validation/test split.
    num_models: N, the number of retrained and of unlearned models.
    seed: root seed of every key in the run.
    conv_impl: convolution lowering: ``gemm``, ``xla`` or ``auto`` (the measured default of
      this backend, or both timed on the device where there is none).
    dtype: compute dtype, ``float32`` or ``bfloat16`` (mixed precision: parameters,
      BatchNorm statistics and losses stay float32).
    cache_params: also store the retrained models' parameters (KLOM's margins need them).
    original: a given original model used instead of training one (:mod:`unlearn_jax.protocol.original`:
      a torchvision ResNet-18 ``.pth`` or an ``.npz`` original of ours); its SHA-256 keys the original's
      cache entry and so every unlearning entry derived from it.
  """

  dataset: str = "digits"
  data_dir: Optional[str] = None
  model: str = "mlp"
  recipe: str = "digits"
  recipe_overrides: tuple[tuple[str, Any], ...] = ()
  split: SplitSpec = SplitSpec()
  num_models: int = 512
  seed: int = 0
  conv_impl: str = "auto"
  dtype: str = "float32"
  cache_params: bool = True
  original: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class MethodChoice:
  """The method and its seed stream.

  Attributes:
    method: an entry of :data:`unlearn_jax.unlearning.METHODS`, a user's ``path/to/file.py:make``
      or ``module:make``, a factory ``make(model, **hp)``, or a built ``UnlearningMethod``.
    hyperparameters: override the factory's defaults (checked against its declarations).
    method_defaults: the part of ``hyperparameters`` that came from the config's per-dataset
      ``method_defaults`` (recorded in ``results.json``).
    unlearn_seed: root seed of the unlearning runs only (``None``: ``seed``); a different
      value draws a fresh stream of unlearned models against the same original and
      retrained models (``sweep --confirm``).
    allow_nan_drop: drop seeds whose unlearned model is not finite instead of failing.
  """

  method: str | UnlearningMethod | Callable[..., UnlearningMethod] = "finetune"
  hyperparameters: tuple[tuple[str, Any], ...] = ()
  method_defaults: tuple[tuple[str, Any], ...] = ()
  unlearn_seed: Optional[int] = None
  allow_nan_drop: bool = False


@dataclasses.dataclass(frozen=True)
class Evaluations:
  """What is computed beside the competition score.

  Attributes:
    metrics: evaluations (:data:`unlearn_jax.analysis.evaluations.METRIC_NAMES`); ``klom``
      makes the measurement stages record margins on ``margin_examples`` retain and held-out
      examples (see :mod:`unlearn_jax.protocol.margins`).
    bootstrap: draws of the model- and example-bootstrap intervals (0: none).
    with_ceiling: compute F of ``retrain`` as the method against the same reference when no
      stored ceiling exists (a stored one is always reported).
  """

  metrics: tuple[str, ...] = ("competition",)
  margin_examples: int = margins.DEFAULT_MARGIN_EXAMPLES
  bootstrap: int = 0
  with_ceiling: bool = False


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """How and where the evaluation runs; nothing here changes a number.

  Attributes:
    strategy, chunk_size: how :class:`~unlearn_jax.seeds.SeedRunner` runs the seed axis
      (``auto``: the measured table, or a measurement on this device where the table has
      no row; ``tune``: always measure).
    cache_dir: root of the model cache; output_dir: where results go (``None``: write nothing
      but the cache; the unlearning chunks then go to a temporary folder).
    process_index, process_count: this process among ``process_count`` running the same call.
    wait_timeout_s: how long a process waits for the chunks of the others.
    compile_cache: keep JAX's persistent compilation cache under ``cache_dir/jax-compilation``
      (:mod:`unlearn_jax.compile_cache`), so running the same evaluation again skips compilation.
    plots: write the PNG plots beside ``results.json``.
    max_hours: time budget (``None``: none): a run whose estimated total exceeds it stops after the
      chunk that showed it (:mod:`unlearn_jax.protocol.budget`).
  """

  strategy: str = "auto"
  chunk_size: Optional[int] = None
  cache_dir: str = "unlearn_cache"
  output_dir: Optional[str] = "results"
  process_index: int = 0
  process_count: int = 1
  wait_timeout_s: float = 3600.0
  compile_cache: bool = True
  plots: bool = False
  max_hours: Optional[float] = None


PARTS = (Setup, MethodChoice, Evaluations, RunOptions)


@dataclasses.dataclass(frozen=True)
class EvalConfig(Setup, MethodChoice, Evaluations, RunOptions):
  """Everything one evaluation needs: the fields of :class:`Setup`, :class:`MethodChoice`,
  :class:`Evaluations` and :class:`RunOptions` (see each for its fields). Library functions
  take this, never argparse."""

  @property
  def setup(self) -> Setup:
    return _part(self, Setup)

  @property
  def method_choice(self) -> MethodChoice:
    return _part(self, MethodChoice)

  @property
  def evaluations(self) -> Evaluations:
    return _part(self, Evaluations)

  @property
  def run(self) -> RunOptions:
    return _part(self, RunOptions)

  @classmethod
  def compose(cls, setup: Setup = Setup(), method: MethodChoice = MethodChoice(),
              evaluations: Evaluations = Evaluations(), run: RunOptions = RunOptions()) -> "EvalConfig":
    """The config made of these parts."""
    fields = {}
    for part in (setup, method, evaluations, run):
      fields.update({f.name: getattr(part, f.name) for f in dataclasses.fields(part)})
    return cls(**fields)


def _part(config: EvalConfig, cls):
  return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


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


def check_dataset(name: Any) -> None:
  """Raises a one-line ``ValueError`` unless ``name`` is a registered, synthetic or ``tfds:`` dataset."""
  if not isinstance(name, str) or (name not in SOURCES and name not in SYNTHETIC and not name.startswith("tfds:")):
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SOURCES) + sorted(SYNTHETIC)} "
                     f"or tfds:<name>")


def validate(config: EvalConfig) -> None:
  """Checks every argument that can be checked without loading data (one-line ``ValueError``)."""
  if config.original is not None and not os.path.isfile(config.original):
    raise ValueError(f"--original {config.original!r} does not exist or is not a regular file")
  check_dataset(config.dataset)
  settings.check_eval_config(config)  # settings that combine badly (klom without cached parameters)
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
  validate_evaluations(config)
  if config.plots and config.output_dir is None:
    raise ValueError("plots need an output directory to be written to; give output_dir or turn plots off")


def validate_evaluations(config: EvalConfig) -> None:
  """The checks of :class:`Evaluations` against the rest of ``config`` (one-line ``ValueError``)."""
  evaluations.check_metrics(config.metrics)
  if int(config.margin_examples) != config.margin_examples or config.margin_examples < 1:
    raise ValueError(f"margin_examples must be an integer >= 1, got {config.margin_examples}")
  settings.check_bootstrap(config.bootstrap, config.num_models)
  if config.with_ceiling and config.process_count > 1:
    raise ValueError("--with-ceiling runs in a single process; evaluate --method retrain on the same setup "
                     "(multi-process) instead, and later results will show its ceiling")
  if "ulira" in config.metrics:
    evaluations.check_ulira_size(config.num_models)


def method_defaults_of(cfg: Mapping[str, Any]) -> dict[str, Any]:
  """The hyperparameters ``method_defaults`` gives the config's method on its dataset (before ``hp``)."""
  method = cfg.get("method")
  if not isinstance(method, str):
    return {}
  return dict(((cfg.get("method_defaults") or {}).get(cfg["dataset"]) or {}).get(method) or {})


SWEEP_KEYS = ("grid", "confirm")


def from_dict(cfg: Mapping[str, Any], process_index: int = 0, process_count: int = 1, *,
              sweep: bool = False) -> EvalConfig:
  """The :class:`EvalConfig` a config dict (the keys of ``configs/default.py``) describes.

  ``cfg["method"]`` may also be a factory or a built method (the Python API). ``sweep``:
  the config drives a sweep, whose own keys (``grid``, ``confirm``) are then allowed;
  otherwise a set sweep key is a one-line error, as is any value that cannot be honoured.
  """
  if not sweep:
    if cfg.get("grid"):
      raise ValueError("the config has a sweep grid; run it with 'unlearn-jax sweep' (evaluate scores one point)")
    if cfg.get("confirm"):
      raise ValueError("the config sets 'confirm', which applies to sweeps only ('unlearn-jax sweep --confirm')")
  setup = configs.setup_defaults(cfg)  # the given value, else the dataset's default, else the fallback
  model, recipe, forget_mode = setup["model"], setup["recipe"], setup["forget_mode"]
  defaults = method_defaults_of(cfg)
  hp = dict(defaults)
  hp.update(cfg.get("hp") or {})
  classes = cfg.get("forget_classes")
  try:
    split = SplitSpec(forget=forget_mode, fraction=float(cfg["forget_fraction"]),
                      num_groups=int(cfg["forget_groups"]), classes=tuple(classes) if classes else None,
                      seed=int(cfg["split_seed"]))
  except (TypeError, ValueError) as err:
    raise ValueError(f"bad forget split settings: {err}") from None
  if forget_mode == "random" and not 0.0 < float(cfg["forget_fraction"]) < 1.0:
    raise ValueError(f"--forget-fraction must lie strictly between 0 and 1, got {cfg['forget_fraction']} "
                     f"(0 empties the forget set, 1 forgets the whole training set)")
  for name in ("num_models", "seed"):
    if not isinstance(cfg[name], int) or isinstance(cfg[name], bool):
      raise ValueError(f"{name} must be an integer, got {cfg[name]!r}")
  metrics = cfg.get("metrics")
  metrics = evaluations.parse_metrics(",".join(metrics) if isinstance(metrics, (list, tuple)) else metrics)
  for name in ("with_ceiling", "plots", "compile_cache", "cache_params", "allow_nan_drop"):
    if not isinstance(cfg.get(name, False), bool):
      raise ValueError(f"{name} must be true or false, got {cfg[name]!r}")
  return EvalConfig(
      dataset=cfg["dataset"], data_dir=cfg.get("data_dir"), model=model, recipe=recipe,
      recipe_overrides=tuple(sorted((cfg.get("recipe_overrides") or {}).items())), split=split,
      method=cfg["method"], hyperparameters=tuple(sorted(hp.items())),
      method_defaults=tuple(sorted(defaults.items())), num_models=cfg["num_models"],
      seed=cfg["seed"], strategy=cfg["strategy"], chunk_size=cfg.get("chunk_size"), conv_impl=cfg["conv_impl"],
      dtype=str(cfg.get("dtype") or "float32"), cache_dir=cfg["cache_dir"], output_dir=cfg["output_dir"],
      cache_params=bool(cfg.get("cache_params", True)), allow_nan_drop=bool(cfg.get("allow_nan_drop")),
      process_index=process_index, process_count=process_count, metrics=metrics,
      margin_examples=cfg.get("margin_examples") or margins.DEFAULT_MARGIN_EXAMPLES,
      bootstrap=settings.check_bootstrap(cfg.get("bootstrap") or 0, cfg.get("num_models")), with_ceiling=bool(cfg.get("with_ceiling")),
      plots=bool(cfg.get("plots", True)), compile_cache=bool(cfg.get("compile_cache", True)),
      max_hours=budget.check_max_hours(cfg.get("max_hours")), original=cfg.get("original"))
