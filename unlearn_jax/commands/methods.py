"""``unlearn-jax methods``: list the registered unlearning methods with their cost and source.

Costs are in R-ep (one forward+backward pass over the retain set) at the
competition's split ratios, |D_f|/|D_r| ≈ 0.025 and |D_v|/|D_r| ≈ 0.125, with
each method's reference hyperparameters, or, with ``--dataset D``, with the
per-dataset defaults ``evaluate --dataset D`` applies (the default config's
``method_defaults``; e.g. ``finetune`` runs the organizers' ``kaggle`` preset on
``competition``). ``--names-only`` prints one method name per line (for scripts).
"""

from __future__ import annotations

from typing import Any

from unlearn_jax import configs
from unlearn_jax.models import get_model
from unlearn_jax.unlearning import METHODS, SetSizes

# A retain set of the competition's order of size, with its forget/validation ratios.
COMPETITION_SIZES = SetSizes(retain=40_000, forget=1_000, validation=5_000)


def add_parser(sub) -> None:
  p = sub.add_parser("methods", help="list the unlearning methods with their cost (R-ep) and source")
  p.add_argument("--dataset", default=None,
                 help="show the hyperparameter defaults 'evaluate --dataset D' applies to each method")
  p.add_argument("--names-only", action="store_true", help="print only the method names, one per line")


def dataset_defaults(dataset: str) -> dict[str, dict[str, Any]]:
  """Per-method hyperparameter defaults of ``dataset`` in the default config (``{}`` for none)."""
  return dict((configs.load_config(None).get("method_defaults") or {}).get(dataset) or {})


def run(args) -> int:
  if args.names_only:
    print("\n".join(METHODS))
    return 0
  defaults = dataset_defaults(args.dataset) if args.dataset else {}
  model = get_model("resnet18", 10)
  sizes = COMPETITION_SIZES
  rows = []
  for name, factory in METHODS.items():
    hp = defaults.get(name, {})
    method = factory(model, **hp)
    shown = " ".join(f"{k}={v}" for k, v in sorted(hp.items())) or "-"
    rows.append((name, f"{method.cost(sizes):.2f}", shown, method.source))
  width = max(len(r[0]) for r in rows)
  where = f"defaults of dataset {args.dataset!r}" if args.dataset else "reference hyperparameters"
  print(f"# cost in R-ep at |D_f|/|D_r| = {sizes.forget / sizes.retain:g}, "
        f"|D_v|/|D_r| = {sizes.validation / sizes.retain:g} ({where})")
  if not args.dataset:  # the plain table: method, cost, source
    print(f"{'method':<{width}}  {'R-ep':>6}  source")
    for name, cost, _, source in rows:
      print(f"{name:<{width}}  {cost:>6}  {source}")
    return 0
  hp_width = max(len("defaults"), *(len(r[2]) for r in rows))
  print(f"{'method':<{width}}  {'R-ep':>6}  {'defaults':<{hp_width}}  source")
  for name, cost, shown, source in rows:
    print(f"{name:<{width}}  {cost:>6}  {shown:<{hp_width}}  {source}")
  return 0
