"""``unlearn-jax methods [M]``: list the unlearning methods, or one method's hyperparameters.

Without an argument: every registered method with its cost and source. Costs are
in R-ep (one forward+backward pass over the retain set) at the competition's
split ratios, |D_f|/|D_r| ≈ 0.025 and |D_v|/|D_r| ≈ 0.125, with each method's
reference hyperparameters, or, with ``--dataset D``, with the per-dataset defaults
``evaluate --dataset D`` applies (the default config's ``method_defaults``; e.g.
``finetune`` runs the organizers' ``kaggle`` preset on ``competition``), shown in a
``defaults`` column, after a line with the dataset's default model, recipe and forget
mode (``source`` on ``competition``: its ``forget.csv``, whole people). ``--names-only`` prints one registered name per line (for scripts).

With a method (a registry name, or a user's ``path/to/file.py:make`` /
``module:make``): its hyperparameters from their declarations
(:mod:`unlearn_jax.unlearning.hparams`): name, type (``?``: null allowed, i.e. a
preset or a derived value fills it), default, valid range and a description;
``[traceable]`` marks values a sweep may pass as traced scalars.
"""

from __future__ import annotations

from typing import Any

from unlearn_jax import configs
from unlearn_jax.models import get_model
from unlearn_jax.unlearning import METHODS, SetSizes
from unlearn_jax.protocol import config as protocol_config

FORGET_MODE_NOTES = {"source": " (the data's own forget list: whole people on competition)"}

# A retain set of the competition's order of size, with its forget/validation ratios.
COMPETITION_SIZES = SetSizes(retain=40_000, forget=1_000, validation=5_000)


def add_parser(sub) -> None:
  p = sub.add_parser("methods", help="list the unlearning methods (cost in R-ep, source), or one method's "
                                     "hyperparameters")
  p.add_argument("method", nargs="?", default=None,
                 help="list this method's hyperparameters (a registry name or path/to/file.py:make)")
  p.add_argument("--dataset", default=None,
                 help="show the hyperparameter defaults 'evaluate --dataset D' applies to each method")
  p.add_argument("--names-only", action="store_true", help="print only the registered names, one per line")


def dataset_defaults(dataset: str) -> dict[str, dict[str, Any]]:
  """Per-method hyperparameter defaults of ``dataset`` in the default config (``{}`` for none)."""
  return dict((configs.load_config(None).get("method_defaults") or {}).get(dataset) or {})


def run(args) -> int:
  method = getattr(args, "method", None)
  dataset = getattr(args, "dataset", None)
  if dataset is not None:
    protocol_config.check_dataset(dataset)  # an unknown dataset is an error, not an empty list of defaults
  if method is not None:
    return _show_method(method, dataset)
  if getattr(args, "names_only", False):
    print("\n".join(METHODS))
    return 0
  defaults = dataset_defaults(dataset) if dataset else {}
  model = get_model("resnet18", 10)
  sizes = COMPETITION_SIZES
  rows = []
  for name, factory in METHODS.items():
    hp = defaults.get(name, {})
    method = factory(model, **hp)
    shown = " ".join(f"{k}={v}" for k, v in sorted(hp.items())) or "-"
    rows.append((name, f"{method.cost(sizes):.2f}", shown, method.source))
  width = max(len(r[0]) for r in rows)
  where = f"defaults of dataset {dataset!r}" if dataset else "reference hyperparameters"
  if dataset:
    setup = configs.setup_defaults(dict(configs.load_config(None), dataset=dataset))
    print(f"# dataset {dataset}: model {setup['model']}, recipe {setup['recipe']}, forget mode "
          f"{setup['forget_mode']}{FORGET_MODE_NOTES.get(setup['forget_mode'], '')} (evaluate's defaults; "
          f"--model, --recipe, --forget-mode change them)")
  print(f"# cost in R-ep at |D_f|/|D_r| = {sizes.forget / sizes.retain:g}, "
        f"|D_v|/|D_r| = {sizes.validation / sizes.retain:g} ({where}); "
        f"a method's hyperparameters: unlearn-jax methods METHOD")
  if not dataset:  # the plain table: method, cost, source
    print(f"{'method':<{width}}  {'R-ep':>6}  source")
    for name, cost, _, source in rows:
      print(f"{name:<{width}}  {cost:>6}  {source}")
    return 0
  hp_width = max(len("defaults"), *(len(r[2]) for r in rows))
  print(f"{'method':<{width}}  {'R-ep':>6}  {'defaults':<{hp_width}}  source")
  for name, cost, shown, source in rows:
    print(f"{name:<{width}}  {cost:>6}  {shown:<{hp_width}}  {source}")
  return 0


def _show_method(spec: str, dataset: str | None = None) -> int:
  from unlearn_jax import plugins
  from unlearn_jax.unlearning import hparams
  src = plugins.resolve_method(spec)
  decl = hparams.declared(src.factory)
  where = f" ({src.origin['source']})" if src.origin else ""
  derived = " (derived from the factory's signature: no HPARAMS declared)" \
      if hparams.module_declarations(src.factory) is None else ""
  print(f"# {src.name}{where}: {len(decl)} hyperparameter(s){derived}; set with --hp NAME=VALUE")
  if dataset is not None:
    shown = " ".join(f"{k}={v}" for k, v in sorted(dataset_defaults(dataset).get(src.name, {}).items()))
    print(f"# defaults of dataset {dataset!r}: {shown or 'none (the declared defaults below)'}")
  if not decl:
    return 0
  rows = [("name", "type", "default", "valid values", "description")] + hparams.describe_table(decl)
  if src.origin is None:  # show what a preset fills in for null defaults (the built method's values)
    built = dict(src.factory(get_model("resnet18", 10)).hyperparameters)
    shown = {k: v for k, v in built.items() if isinstance(v, (bool, int, float, str, tuple))}
    rows = [r if r[2] != "None" or shown.get(r[0]) is None else (r[0], r[1], f"{shown[r[0]]!r} (preset)", *r[3:])
            for r in rows]
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  for r in rows:
    print("  ".join(f"{c:<{w}}" for c, w in zip(r[:4], widths)) + "  " + r[4])
  return 0
