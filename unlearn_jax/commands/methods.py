"""``unlearn-jax methods``: list the registered unlearning methods with their cost and source.

Costs are in R-ep (one forward+backward pass over the retain set) at the
competition's split ratios, |D_f|/|D_r| ≈ 0.025 and |D_v|/|D_r| ≈ 0.125, with
each method's reference hyperparameters.
"""

from __future__ import annotations

from unlearn_jax.models import get_model
from unlearn_jax.unlearning import METHODS, SetSizes

# A retain set of the competition's order of size, with its forget/validation ratios.
COMPETITION_SIZES = SetSizes(retain=40_000, forget=1_000, validation=5_000)


def add_parser(sub) -> None:
  sub.add_parser("methods", help="list the unlearning methods with their cost (R-ep) and source")


def run(args) -> int:
  del args
  model = get_model("resnet18", 10)
  sizes = COMPETITION_SIZES
  rows = []
  for name, factory in METHODS.items():
    method = factory(model)
    rows.append((name, f"{method.cost(sizes):.2f}", method.source))
  width = max(len(r[0]) for r in rows)
  print(f"# cost in R-ep at |D_f|/|D_r| = {sizes.forget / sizes.retain:g}, "
        f"|D_v|/|D_r| = {sizes.validation / sizes.retain:g} (reference hyperparameters)")
  print(f"{'method':<{width}}  {'R-ep':>6}  source")
  for name, cost, source in rows:
    print(f"{name:<{width}}  {cost:>6}  {source}")
  return 0
