"""``unlearn-jax evaluate``: score one unlearning method with the competition protocol.

Flags override the config (``--config``, default ``configs/default.py``), and
``--set key=value`` overrides both. The command only parses and prints: the evaluation,
its checks and its outputs are :func:`unlearn_jax.protocol.run.evaluate` (stages, caching,
resuming and multi-process behaviour are described there).

Beside ``results.json`` it writes ``populations.npz`` (the per-model confidences and
accuracies, :mod:`unlearn_jax.results.populations`) for ``compare`` and ``stability``.
``--bootstrap B`` adds bootstrap intervals (:mod:`unlearn_jax.analysis.uncertainty`),
``--with-ceiling`` F of ``retrain`` as the method (:mod:`unlearn_jax.results.ceiling`, also shown
whenever the cache already holds it), and ``--metrics competition,ulira,klom`` the
many-model attacks (:mod:`unlearn_jax.analysis.evaluations`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from unlearn_jax import configs, distributed, seeds
from unlearn_jax.data import download
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES
from unlearn_jax.protocol import config as protocol_config
from unlearn_jax.protocol import run as protocol_run
from unlearn_jax.results import diagnostics, timing
from unlearn_jax.results.progress import Progress

# flag dest -> config key (flags default to None so that only given flags override the config)
FLAG_KEYS = {
    "dataset": "dataset", "data_dir": "data_dir", "model": "model", "recipe": "recipe", "method": "method",
    "num_models": "num_models", "forget_mode": "forget_mode", "forget_fraction": "forget_fraction",
    "forget_groups": "forget_groups", "split_seed": "split_seed", "strategy": "strategy",
    "chunk_size": "chunk_size", "conv_impl": "conv_impl", "dtype": "dtype", "seed": "seed", "output_dir": "output_dir",
    "cache_dir": "cache_dir", "allow_nan_drop": "allow_nan_drop", "plots": "plots", "metrics": "metrics",
    "margin_examples": "margin_examples", "bootstrap": "bootstrap", "with_ceiling": "with_ceiling",
    "compile_cache": "compile_cache", "max_hours": "max_hours", "original": "original",
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
  p.add_argument("--original", metavar="PATH",
                 help="start from this original model instead of training one: a torchvision ResNet-18 "
                      "state_dict (.pth, as the competition's original_model.pth; read without PyTorch) or an "
                      "original.npz saved by this project; its SHA-256 keys every cache entry derived from it")
  p.add_argument("--method", help="unlearning method (default finetune), or your own factory path/to/file.py:make or "
                                  "module:make, make(model, **hp) -> UnlearningMethod")
  p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                 help="method hyperparameter override (repeatable), e.g. --hp lr=0.01; checked against the "
                      "method's declared types and ranges (unlearn-jax methods METHOD lists them)")
  p.add_argument("--num-models", type=int, help="N, retrained and unlearned models each (default 512)")
  p.add_argument("--forget-mode", help="forget set: random, groups, classes or source (default per dataset: "
                                       "source on competition, the data's own forget list of whole people; "
                                       "random elsewhere)")
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
  p.add_argument("--max-hours", type=float, metavar="H",
                 help="time budget: once a stage's first chunk (a sweep's first point) has run, the run's estimated "
                      "total is printed and a run that would exceed H hours stops (exit 2), its finished chunks kept")
  p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  p.add_argument("--distributed", choices=distributed.MODES, default=None,
                 help="multi-process: auto = jax.distributed.initialize() with no arguments, which finds the "
                      "coordinator, process count and id on a Cloud TPU pod slice, SLURM or Open MPI (run the same "
                      "command on every host)")
  p.add_argument("--distributed-timeout", type=float, default=None, metavar="SECONDS",
                 help=f"multi-process: seconds the processes may take to meet before start-up fails "
                      f"(default {distributed.DEFAULT_TIMEOUT_S:g})")
  p.add_argument("--coordinator", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                 help="multi-process: coordinator host:port (env JAX_COORDINATOR_ADDRESS)")
  p.add_argument("--num-processes", type=int, default=None,
                 help="multi-process: number of processes (env JAX_NUM_PROCESSES)")
  p.add_argument("--process-id", type=int, default=None,
                 help="multi-process: this process's id (env JAX_PROCESS_ID)")


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


def _init_distributed(args) -> tuple[int, int]:
  """This process's (index, count): :func:`unlearn_jax.distributed.start` on the flags."""
  return distributed.start(args.distributed, args.coordinator, args.num_processes, args.process_id,
                           timeout_s=args.distributed_timeout)


def download_first(config, progress) -> None:
  """``--download``: checks every other argument, then prepares the tfds source into ``config.data_dir``."""
  name = download.check_downloadable(config.dataset)
  if config.process_count > 1:
    raise ValueError("--download runs in one process: prepare the data first (the same command with one "
                     "process), then start the multi-process run")
  protocol_config.validate(dataclasses.replace(config, data_dir=None))  # the folder may not exist yet
  download.prepare_tfds(name, config.data_dir, progress.line)


def run(args) -> int:
  cfg = resolve_config(args)
  config = protocol_config.from_dict(cfg)  # checked before any process starts
  process_index, process_count = _init_distributed(args)
  config = dataclasses.replace(config, process_index=process_index, process_count=process_count)
  progress = Progress(enabled=not args.quiet)
  if args.download:
    download_first(config, progress)
  evaluation = protocol_run.evaluate(config, progress)
  if evaluation is None:
    return 0
  results = evaluation.record
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
  for line in split_lines(results, cfg):
    print(f"  {line}")
  defaults = results.get("method_defaults")
  if defaults:
    shown = " ".join(f"{k}={v}" for k, v in sorted(defaults.items()))
    print(f"  method defaults of dataset {results['dataset']}: {shown} (override with --hp)")
  if results["degenerate"]["flagged"]:
    print(f"  no-op: {', '.join(results['degenerate']['reasons'])} (the score does not measure forgetting)")
  print(f"  results: {evaluation.paths['results']}")
  return 0


def split_lines(results: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
  """Printed lines for the people in each split (data with person ids) and the forget mode, where it is the
  dataset's default (``cfg``: the resolved config, as :func:`resolve_config` returns it)."""
  lines = []
  people = results.get("split_people")
  if people:
    lines.append(f"people: forget {people['forget_people']} ({people['forget_people_in_retain']} also in retain), "
                 f"validation {people['validation_people']} / test {people['test_people']} "
                 f"({people['validation_people_in_test']} in both)")
  setup = configs.setup_defaults(cfg)
  if "forget_mode" in setup["from_dataset"]:
    lines.append(f"forget set: mode {setup['forget_mode']} (default of dataset {cfg['dataset']}; --forget-mode to "
                 f"change)")
  return lines


def summary_lines(results: dict[str, Any]) -> list[str]:
  """Printed lines for the bootstrap, the ceiling, U-LiRA, the method's diagnostics and KLOM, where present."""
  lines = []
  b = results.get("bootstrap")
  if b:
    f, s, e = b["forgetting_quality"], b["final_score"], b["example_forgetting_quality"]
    j = b.get("jackknife_forgetting_quality")
    jack = f", [{j['lo']:.4f}, {j['hi']:.4f}] (models, grouped jackknife)" if j else ""
    lines.append(f"{100 * b['level']:g}% intervals ({b['num_draws']} draws): F [{f['lo']:.4f}, {f['hi']:.4f}] "
                 f"(models){jack}, [{e['lo']:.4f}, {e['hi']:.4f}] (examples); "
                 f"final score [{s['lo']:.4f}, {s['hi']:.4f}]")
  c = results.get("ceiling")
  if c:
    ratio = "n/a" if c["ratio"] is None else f"{c['ratio']:.3f}"
    if c.get("forgetting_quality") is None:
      lines.append(f"ceiling: {c.get('note', 'not available')}")
    else:
      at = f" at N={c['num_models']}, subsampled from {c['subsampled_from']}" if c.get("subsampled_from") else ""
      band = f", {c['interval']['lo']:.4f} to {c['interval']['hi']:.4f} (models)" if c.get("interval") else ""
      lines.append(f"ceiling F {c['forgetting_quality']:.4f}{band} (an estimate: retrain as the method{at}); "
                   f"F / F_ceiling {ratio}")
  u = results.get("ulira")
  if u:
    lines.append(f"U-LiRA: balanced accuracy {u['pair_balanced_accuracy']:.4f}, AUC {u['pair_auc']:.4f} (per pair); "
                 f"AUC {u['model_auc']:.4f} (per model); 0.5 = indistinguishable")
  k = results.get("klom")
  if k:
    base = results.get("klom_baseline") or {}
    halves = base.get("source", "ceiling") != "ceiling"
    which = "retrained halves" if halves else "retrain vs retrain"
    versus = lambda split: (f" ({which} {base[split]['mean']:.4f} / {base[split]['p95']:.4f})"
                            if split in base else "")
    note = (f"; retrained halves: {base.get('num_models')} reference models against the other "
            f"{base.get('num_models')}, above the baseline at N" if halves else "")
    lines.append("KLOM " + ", ".join(f"{split} mean {v['mean']:.4f} p95 {v['p95']:.4f}{versus(split)}"
                                     for split, v in k.items()) + note)
  lines += diagnostics.summary_lines(results)
  return lines
