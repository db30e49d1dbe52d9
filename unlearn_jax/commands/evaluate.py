"""``unlearn-jax evaluate``: score one unlearning method with the competition protocol.

Flags override the config (``--config``, default ``configs/default.py``), and
``--set key=value`` overrides both. See :mod:`unlearn_jax.pipeline` for the
stages, caching, resuming and multi-process behaviour.

Beside ``results.json`` it writes ``populations.npz`` (the per-model confidences and
accuracies, :mod:`unlearn_jax.populations`) for ``compare`` and ``stability``.
``--bootstrap B`` adds bootstrap intervals (:mod:`unlearn_jax.uncertainty`),
``--with-ceiling`` F of ``retrain`` as the method (:mod:`unlearn_jax.ceiling`, also shown
whenever the cache already holds it), and ``--metrics competition,ulira,klom`` the
many-model attacks (:mod:`unlearn_jax.evaluations`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from unlearn_jax import configs, seeds
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES

# flag dest -> config key (flags default to None so that only given flags override the config)
FLAG_KEYS = {
    "dataset": "dataset", "data_dir": "data_dir", "model": "model", "recipe": "recipe", "method": "method",
    "num_models": "num_models", "forget_mode": "forget_mode", "forget_fraction": "forget_fraction",
    "forget_groups": "forget_groups", "split_seed": "split_seed", "strategy": "strategy",
    "chunk_size": "chunk_size", "conv_impl": "conv_impl", "dtype": "dtype", "seed": "seed", "output_dir": "output_dir",
    "cache_dir": "cache_dir", "allow_nan_drop": "allow_nan_drop", "plots": "plots", "metrics": "metrics",
    "margin_examples": "margin_examples", "bootstrap": "bootstrap", "with_ceiling": "with_ceiling",
    "compile_cache": "compile_cache",
}


def add_parser(sub) -> None:
  p = sub.add_parser("evaluate", help="score an unlearning method: N retrained vs N unlearned models",
                     description=__doc__.split("\n\n")[0])
  add_arguments(p)


def add_arguments(p) -> None:
  """The config, setup, method and run flags (shared with ``sweep``)."""
  p.add_argument("--config", default=None,
                 help="config: a module of unlearn_jax/configs (e.g. tiny), a .py with get_config(), or .json/.yaml")
  p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config key (repeatable; dotted keys for mappings, e.g. hp.lr=0.01)")
  p.add_argument("--dataset", help="dataset (default digits)")
  p.add_argument("--data-dir", help="directory of the dataset's files, if it needs any")
  p.add_argument("--download", action="store_true",
                 help="first download and prepare a tensorflow-datasets source into --data-dir "
                      "(needs internet and: pip install 'unlearn_jax[download]')")
  p.add_argument("--model", help="model (default per dataset: mlp on digits), or your own Flax module factory "
                                 "path/to/file.py:make or module:make, make(num_classes, conv_impl, dtype)")
  p.add_argument("--recipe", help="training recipe for original and retrained models (default per dataset)")
  p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
  p.add_argument("--method", help="unlearning method (default finetune), or your own factory path/to/file.py:make or "
                                  "module:make, make(model, **hp) -> UnlearningMethod")
  p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                 help="method hyperparameter override (repeatable), e.g. --hp lr=0.01; checked against the "
                      "method's declared types and ranges (unlearn-jax methods METHOD lists them)")
  p.add_argument("--num-models", type=int, help="N, retrained and unlearned models each (default 512)")
  p.add_argument("--forget-mode", help="forget set: random, groups, classes or source (default random)")
  p.add_argument("--forget-fraction", type=float, help="forget fraction for --forget-mode random (default 0.1)")
  p.add_argument("--forget-groups", type=int, help="number of groups for --forget-mode groups")
  p.add_argument("--forget-classes", help="comma-separated classes for --forget-mode classes")
  p.add_argument("--split-seed", type=int, help="seed of the forget/validation split (default 0)")
  p.add_argument("--strategy", choices=list(seeds.STRATEGIES),
                 help="seed-axis strategy (default auto: measured table, else measured on this device; "
                      "tune: always measure)")
  p.add_argument("--chunk-size", type=int, help="seeds per program (and per saved chunk)")
  p.add_argument("--conv-impl", choices=CONV_IMPL_CHOICES,
                 help="convolution lowering (default auto: measured default, else timed on this device)")
  p.add_argument("--dtype", choices=sorted(COMPUTE_DTYPES),
                 help="compute dtype (default float32; bfloat16 keeps float32 parameters, statistics and losses)")
  p.add_argument("--seed", type=int, help="root seed of all model keys (default 0)")
  p.add_argument("--output-dir", help="directory for results.json, plots and resumable chunks")
  p.add_argument("--cache-dir", help="model cache directory (default ./unlearn_cache)")
  p.add_argument("--allow-nan-drop", action="store_true", default=None,
                 help="drop seeds on which the method diverges instead of failing")
  p.add_argument("--no-plots", dest="plots", action="store_false", default=None, help="skip the PNG plots")
  p.add_argument("--metrics", help="comma-separated evaluations: competition (always), ulira, klom "
                                    "(default competition)")
  p.add_argument("--margin-examples", type=int,
                 help="retain and held-out examples on which klom records margins (default 1000, or all if fewer)")
  p.add_argument("--bootstrap", type=int, metavar="B",
                 help="add model- and example-bootstrap 95%% intervals of F and the final score from B draws")
  p.add_argument("--with-ceiling", action="store_true", default=None,
                 help="compute F of retrain as the method (N more retrained models, cached) if the cache lacks it")
  p.add_argument("--no-compile-cache", dest="compile_cache", action="store_false", default=None,
                 help="do not keep JAX's persistent compilation cache in <cache-dir>/jax-compilation (default: "
                      "kept, so running the same command again skips compilation)")
  p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  p.add_argument("--coordinator", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                 help="multi-process: coordinator host:port (env JAX_COORDINATOR_ADDRESS)")
  p.add_argument("--num-processes", type=int, default=None,
                 help="multi-process: number of processes (env JAX_NUM_PROCESSES)")
  p.add_argument("--process-id", type=int, default=None,
                 help="multi-process: this process's id (env JAX_PROCESS_ID)")


def _env_int(name: str):
  """The integer in environment variable ``name`` (``None`` if unset); read only where it is used."""
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def resolve_config(args) -> dict[str, Any]:
  """The config after ``--config``, the given flags and ``--set``."""
  cfg = configs.load_config(args.config)
  for dest, key in FLAG_KEYS.items():
    value = getattr(args, dest, None)
    if value is not None:
      cfg[key] = value
  if args.epochs is not None:
    cfg["recipe_overrides"] = dict(cfg.get("recipe_overrides") or {}, epochs=args.epochs)
  if args.forget_classes is not None:
    try:
      cfg["forget_classes"] = [int(c) for c in args.forget_classes.split(",") if c.strip()]
    except ValueError:
      raise ValueError(f"--forget-classes must be comma-separated integers, got {args.forget_classes!r}") from None
  if args.hp:
    cfg["hp"] = dict(cfg.get("hp") or {}, **_parse_hp(args.hp))
  return configs.apply_overrides(cfg, args.set_)


def _parse_hp(items) -> dict[str, Any]:
  out = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--hp expects NAME=VALUE, got {item!r}")
    name, text = item.split("=", 1)
    out[name.strip()] = configs.parse_value(text)
  return out


def method_defaults_of(cfg: dict[str, Any]) -> dict[str, Any]:
  """The hyperparameters ``method_defaults`` gives the config's method on its dataset (before ``hp``)."""
  return dict(((cfg.get("method_defaults") or {}).get(cfg["dataset"]) or {}).get(cfg["method"]) or {})


def to_eval_config(cfg: dict[str, Any], process_index: int = 0, process_count: int = 1):
  """The :class:`~unlearn_jax.pipeline.EvalConfig` a config dict describes."""
  from unlearn_jax import evaluations, margins, pipeline
  from unlearn_jax.data import SplitSpec
  ds_defaults = (cfg.get("dataset_defaults") or {}).get(cfg["dataset"], {})
  model = cfg.get("model") or ds_defaults.get("model", "resnet18")
  recipe = cfg.get("recipe") or ds_defaults.get("recipe", "competition")
  hp = method_defaults_of(cfg)
  hp.update(cfg.get("hp") or {})
  classes = cfg.get("forget_classes")
  try:
    split = SplitSpec(forget=cfg["forget_mode"], fraction=float(cfg["forget_fraction"]),
                      num_groups=int(cfg["forget_groups"]), classes=tuple(classes) if classes else None,
                      seed=int(cfg["split_seed"]))
  except (TypeError, ValueError) as err:
    raise ValueError(f"bad forget split settings: {err}") from None
  if cfg["forget_mode"] == "random" and not 0.0 < float(cfg["forget_fraction"]) < 1.0:
    raise ValueError(f"--forget-fraction must lie strictly between 0 and 1, got {cfg['forget_fraction']} "
                     f"(0 empties the forget set, 1 forgets the whole training set)")
  for name in ("num_models", "seed"):
    if not isinstance(cfg[name], int) or isinstance(cfg[name], bool):
      raise ValueError(f"{name} must be an integer, got {cfg[name]!r}")
  metrics = cfg.get("metrics")
  metrics = evaluations.parse_metrics(",".join(metrics) if isinstance(metrics, (list, tuple)) else metrics)
  margin_examples = cfg.get("margin_examples") or margins.DEFAULT_MARGIN_EXAMPLES
  return pipeline.EvalConfig(
      dataset=cfg["dataset"], data_dir=cfg.get("data_dir"), model=model, recipe=recipe,
      recipe_overrides=tuple(sorted((cfg.get("recipe_overrides") or {}).items())), split=split,
      method=cfg["method"], hyperparameters=tuple(sorted(hp.items())), num_models=cfg["num_models"],
      seed=cfg["seed"], strategy=cfg["strategy"], chunk_size=cfg.get("chunk_size"), conv_impl=cfg["conv_impl"],
      dtype=str(cfg.get("dtype") or "float32"), cache_dir=cfg["cache_dir"], output_dir=cfg["output_dir"], cache_params=bool(cfg.get("cache_params", True)),
      allow_nan_drop=bool(cfg.get("allow_nan_drop")), process_index=process_index, process_count=process_count,
      metrics=metrics, margin_examples=margin_examples, compile_cache=bool(cfg.get("compile_cache", True)))


def _init_distributed(args) -> tuple[int, int]:
  if args.num_processes is None:
    args.num_processes = _env_int("JAX_NUM_PROCESSES")
  if args.process_id is None:
    args.process_id = _env_int("JAX_PROCESS_ID")
  if not args.coordinator and not args.num_processes:
    return 0, 1
  if not args.coordinator or args.num_processes is None or args.process_id is None:
    raise ValueError("multi-process runs need --coordinator, --num-processes and --process-id (or the "
                     "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables)")
  import jax
  if args.num_processes > 1:
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  return jax.process_index(), jax.process_count()


def _draws(cfg: dict[str, Any]) -> int:
  value = cfg.get("bootstrap") or 0
  if not isinstance(value, int) or isinstance(value, bool) or value == 1 or value < 0:
    raise ValueError(f"--bootstrap must be an integer >= 2 (draws), got {value!r}")
  return value


def add_evaluations(results: dict[str, Any], config, *, bootstrap: int = 0, with_ceiling: bool = False,
                    progress=None) -> dict[str, Any]:
  """Adds U-LiRA / KLOM (``config.metrics``), bootstrap intervals and the ceiling to ``results`` in place."""
  from unlearn_jax import ceiling, evaluations, timing, uncertainty
  arrays = results["_arrays"]
  results["metrics"] = list(config.metrics)
  many = [m for m in config.metrics if m != "competition"]
  if many:
    with timing.stage(results, "evaluations", progress, f"{', '.join(many)} on {results['num_models_scored']} models"):
      results.update(evaluations.many_model_scores(config.metrics, arrays["unlearned"], arrays["retrained"],
                                                   seed=config.seed))
  if bootstrap:
    with timing.stage(results, "bootstrap", progress, f"{bootstrap} model and {bootstrap} example draws"):
      results["bootstrap"] = uncertainty.bootstrap_intervals(arrays["unlearned"], arrays["retrained"],
                                                             arrays["epsilons"], num_draws=bootstrap, seed=config.seed)
  ceiling.record(config, results)
  stored = ceiling.read(results["cache"]["retrained"], config.num_models)
  if stored is None and with_ceiling:
    with timing.stage(results, "ceiling", progress):
      stored = ceiling.compute(config, results["cache"]["retrained"], progress)
  if stored is not None:
    results["ceiling"] = ceiling.for_results(results, stored)
  return results


def _download(config, progress) -> None:
  """``--download``: checks every other argument, then prepares the tfds source into ``config.data_dir``."""
  import dataclasses
  from unlearn_jax import pipeline
  from unlearn_jax.data import download
  name = download.check_downloadable(config.dataset)
  if config.process_count > 1:
    raise ValueError("--download runs in one process: prepare the data first (the same command with one "
                     "process), then start the multi-process run")
  pipeline.validate(dataclasses.replace(config, data_dir=None))  # the folder may not exist yet
  download.prepare_tfds(name, config.data_dir, progress.line)


def run(args) -> int:
  from unlearn_jax import evaluations, pipeline, populations, report, timing
  cfg = resolve_config(args)
  if cfg.get("grid"):
    raise ValueError("the config has a sweep grid; run it with 'unlearn-jax sweep' (evaluate scores one point)")
  process_index, process_count = _init_distributed(args)
  config = to_eval_config(cfg, process_index, process_count)
  bootstrap, with_ceiling = _draws(cfg), bool(cfg.get("with_ceiling"))
  if with_ceiling and process_count > 1:
    raise ValueError("--with-ceiling runs in a single process; evaluate --method retrain on the same setup "
                     "(multi-process) instead, and later results will show its ceiling")
  if "ulira" in config.metrics:
    evaluations.check_ulira_size(config.num_models)
  progress = pipeline.Progress(enabled=not args.quiet)
  if args.download:
    _download(config, progress)
  results = pipeline.evaluate(config, progress)
  if results is None:
    return 0
  defaults = method_defaults_of(cfg)
  results["method_defaults"] = defaults
  add_evaluations(results, config, bootstrap=bootstrap, with_ceiling=with_ceiling, progress=progress)
  os.makedirs(config.output_dir, exist_ok=True)
  populations.write_populations(results, config.output_dir)
  path = report.write_results(results, config.output_dir)
  if cfg.get("plots", True):
    report.write_plots(results, config.output_dir)
  for line in results["cache"]["rebuilt"]:
    print(f"unlearn-jax: warning: corrupt cache entry rebuilt: {line}", file=sys.stderr)
  u, r = results["unlearned"], results["retrained"]
  print(f"{results['method']} on {results['dataset']} (N={results['num_models_scored']}): "
        f"forgetting quality {results['forgetting_quality']:.4f}, final score {results['final_score']:.4f}")
  print(f"  unlearned: retain {100 * u['retain_accuracy']['mean']:.2f}%  forget "
        f"{100 * u['forget_accuracy']['mean']:.2f}%  test {100 * u['test_accuracy']['mean']:.2f}%")
  print(f"  retrained: retain {100 * r['retain_accuracy']['mean']:.2f}%  forget "
        f"{100 * r['forget_accuracy']['mean']:.2f}%  test {100 * r['test_accuracy']['mean']:.2f}%")
  for line in summary_lines(results):
    print(f"  {line}")
  print(f"  cost {results['cost']['relative_to_retrain']:.3f} x retraining; wall "
        f"{timing.breakdown(results['wall_s'])} on {results['device']}")
  if defaults:
    shown = " ".join(f"{k}={v}" for k, v in sorted(defaults.items()))
    print(f"  method defaults of dataset {cfg['dataset']}: {shown} (override with --hp)")
  if results["degenerate"]["flagged"]:
    print(f"  no-op: {', '.join(results['degenerate']['reasons'])} (the score does not measure forgetting)")
  print(f"  results: {path}")
  return 0


def summary_lines(results: dict[str, Any]) -> list[str]:
  """Printed lines for the bootstrap, the ceiling, U-LiRA, KLOM and the method's diagnostics, where present."""
  from unlearn_jax import diagnostics
  lines = []
  b = results.get("bootstrap")
  if b:
    f, s, e = b["forgetting_quality"], b["final_score"], b["example_forgetting_quality"]
    lines.append(f"{100 * b['level']:g}% intervals ({b['num_draws']} draws): F [{f['lo']:.4f}, {f['hi']:.4f}] "
                 f"(models), [{e['lo']:.4f}, {e['hi']:.4f}] (examples); final score [{s['lo']:.4f}, {s['hi']:.4f}]")
  c = results.get("ceiling")
  if c:
    ratio = "n/a" if c["ratio"] is None else f"{c['ratio']:.3f}"
    if c.get("forgetting_quality") is None:
      lines.append(f"ceiling: {c.get('note', 'not available')}")
    else:
      at = f" at N={c['num_models']}, subsampled from {c['subsampled_from']}" if c.get("subsampled_from") else ""
      lines.append(f"ceiling F {c['forgetting_quality']:.4f} (retrain as the method{at}); F / F_ceiling {ratio}")
  u = results.get("ulira")
  if u:
    lines.append(f"U-LiRA: balanced accuracy {u['pair_balanced_accuracy']:.4f}, AUC {u['pair_auc']:.4f} (per pair); "
                 f"AUC {u['model_auc']:.4f} (per model); 0.5 = indistinguishable")
  k = results.get("klom")
  if k:
    lines.append("KLOM " + ", ".join(f"{split} mean {v['mean']:.4f} p95 {v['p95']:.4f}" for split, v in k.items()))
  lines += diagnostics.summary_lines(results)
  return lines
