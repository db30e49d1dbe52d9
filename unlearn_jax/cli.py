"""The ``unlearn-jax`` command line.

Each subcommand lives in :mod:`unlearn_jax.commands` as a module with
``add_parser(subparsers)`` and ``run(args) -> int``. Errors a user can cause
(bad arguments, unreadable files, invalid data) are printed as one line
``unlearn-jax: error: ...`` with exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from unlearn_jax.commands import compare as compare_cmd
from unlearn_jax.commands import evaluate as evaluate_cmd
from unlearn_jax.commands import leaderboard as leaderboard_cmd
from unlearn_jax.commands import methods as methods_cmd
from unlearn_jax.commands import score as score_cmd
from unlearn_jax.commands import stability as stability_cmd
from unlearn_jax.commands import sweep as sweep_cmd
from unlearn_jax.commands import train as train_cmd
from unlearn_jax.commands import tune as tune_cmd

COMMANDS = {
    "train": train_cmd,
    # further subcommands: one line each
    "evaluate": evaluate_cmd,
    "leaderboard": leaderboard_cmd,
    "methods": methods_cmd,
    "score": score_cmd,
    "compare": compare_cmd,
    "stability": stability_cmd,
    "sweep": sweep_cmd,
    "tune": tune_cmd,
}

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError, OSError)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="unlearn-jax",
      description="Evaluate machine-unlearning methods with the NeurIPS 2023 competition protocol.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, module in COMMANDS.items():
    module.add_parser(sub)
  return parser


def _message(err: BaseException) -> str:
  text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
  return " ".join(text.split()) or type(err).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return int(COMMANDS[args.command].run(args) or 0)
  except USER_ERRORS as err:
    print(f"unlearn-jax: error: {_message(err)}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("unlearn-jax: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
