"""``unlearn-jax sweep``: score one method over a grid of hyperparameters against one reference.

Example::

  unlearn-jax sweep --method seif --grid lr=1e-4,7e-4,3e-3 --grid noise_std=0.05,0.6 \
      --num-models 128 --output-dir runs/seif-sweep --confirm

The original and the N retrained models are trained (or read from the cache)
once; every grid point runs only its unlearning and scoring stages and writes a
normal result directory ``DIR/<point>/`` (``unlearn-jax leaderboard DIR/*/``
reads them). ``DIR/sweep.md`` / ``sweep.csv`` rank the points by final score,
``sweep.png`` plots F and accuracies against each hyperparameter. All flags of
``evaluate`` apply; a config (``--config``) may hold the grid as a mapping
``grid: {lr: [1e-4, 1e-3], epochs: [1, 3]}``, and ``--grid`` flags replace its
keys. A killed sweep restarted with the same command reuses finished points.
See :mod:`unlearn_jax.sweep`.
"""

from __future__ import annotations

from unlearn_jax import compile_cache, distributed, sweep
from unlearn_jax.commands import evaluate as evaluate_cmd
from unlearn_jax.protocol import config as protocol_config
from unlearn_jax.protocol import run as protocol_run
from unlearn_jax.results.progress import Progress


def add_parser(sub) -> None:
  p = sub.add_parser("sweep", help="score a method over a hyperparameter grid, reusing one retrained population",
                     description=__doc__.split("\n\n")[0])
  evaluate_cmd.add_arguments(p)
  p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                 help="a swept hyperparameter and its values (repeatable; the grid is their product)")
  p.add_argument("--confirm", action="store_true", default=None,
                 help="re-evaluate the best point on a fresh unlearning seed stream and report both scores")
  p.add_argument("--confirm-seed", type=int, default=None,
                 help="root seed of the confirming unlearning runs (default: --seed + 1)")


def run(args) -> int:
  cfg = evaluate_cmd.resolve_config(args)
  if distributed.requested(args.distributed, args.num_processes, args.distributed_timeout):
    raise ValueError("sweep runs in a single process; drop --distributed, --distributed-timeout and "
                     "--num-processes (and JAX_NUM_PROCESSES)")
  grid = sweep.grid_from_config(cfg.get("grid"))
  grid.update(sweep.parse_grid_args(args.grid))
  config = protocol_config.from_dict(cfg, sweep=True)
  confirm = bool(cfg.get("confirm")) if args.confirm is None else True
  progress = Progress(enabled=not args.quiet)
  sweep.plan(config, grid, confirm_seed=args.confirm_seed, confirm=confirm)  # a bad grid or output fails first
  if args.download:
    evaluate_cmd.download_first(config, progress)
  with compile_cache.persistent_cache(protocol_run.compile_cache_dir(config)):
    result = sweep.run_sweep(config, grid, progress=progress, plots=config.plots, confirm=confirm,
                             confirm_seed=args.confirm_seed)
  print(sweep.sweep_markdown(result), end="")
  print(f"  table: {result.paths['markdown']} (csv: {result.paths['csv']})")
  if "plot" in result.paths:
    print(f"  plot: {result.paths['plot']}")
  return 0
