"""``unlearn-jax leaderboard DIR...``: rank evaluated methods by final score.

Only results on the same setup (data, split, model, recipe, dtype, N; see
:mod:`unlearn_jax.results.setups`) are ranked together: mixed setups give one table per
setup, or an error with ``--strict``.
"""

from __future__ import annotations

from unlearn_jax import checkpoint, files
from unlearn_jax.results import report


def add_parser(sub) -> None:
  p = sub.add_parser("leaderboard", help="table of evaluate results ranked by final score")
  p.add_argument("runs", nargs="+", metavar="DIR", help="output directories of 'unlearn-jax evaluate' (or results files)")
  p.add_argument("--format", default="markdown", choices=["markdown", "csv"], help="table format")
  p.add_argument("--output", default=None, help="also write the table to this file (its folder must exist)")
  p.add_argument("--strict", action="store_true",
                 help="refuse results of different setups instead of printing one table per setup")


def run(args) -> int:
  files.refuse_special_target(args.output or "")  # before any work: outputs replace only regular files
  table = report.leaderboard_table(report.leaderboard_rows(args.runs, strict=args.strict), args.format)
  if args.output:
    checkpoint.atomic_write_text(args.output, table, make_dirs=False)
  print(table, end="")
  return 0
