"""The unlearning-method contract.

A method is built by a factory ``make(model, **hyperparameters)`` (every
hyperparameter has a default: the reference value) and is an
:class:`UnlearningMethod`: a name, its source, its cost, and one pure function

    unlearn(original: ModelState, data: SplitData, key) -> UnlearnResult

that performs *one* unlearning run of *one* seed. It has no side effects and no
Python-level randomness: every random choice (data order, masks, noise,
relabelling, re-initialisation, which layers) derives from ``key`` through
``fold_in``/``split``. The seed axis is added outside, by
:mod:`unlearn_jax.seeds`, so N runs are one program.

``data`` is the device-resident :class:`~unlearn_jax.data.SplitData`
(retain, forget and validation index sets); ``original`` holds the trained
model's params and BatchNorm statistics, which also serve as a frozen teacher.

Small runs (tests, smoke runs): a method module may define a module-level dict
``SMALL_OVERRIDES`` of hyperparameters its factory accepts that make one run
tiny (e.g. ``dict(epochs=1, batch_size=8)``); :func:`small_overrides` returns
it for a registered factory (``{}`` when the module has none, i.e. its
defaults are already cheap on a tiny split). The registry contract test builds
every method as ``make(model, **small_overrides(make))``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Mapping

import flax.struct
import jax

from unlearn_jax.types import BatchStats, Params


@flax.struct.dataclass
class ModelState:
  """A model's variables: ``params`` and BatchNorm ``batch_stats``."""

  params: Params
  batch_stats: BatchStats


@flax.struct.dataclass
class UnlearnResult:
  """One unlearning run's output: the unlearned model and its metrics.

  ``metrics`` maps names to arrays with a fixed shape per method (e.g. one
  value per epoch or per step), so results stack across seeds.
  """

  state: ModelState
  metrics: Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class SetSizes:
  """Split sizes a method's cost depends on."""

  retain: int
  forget: int
  validation: int


@dataclasses.dataclass(frozen=True)
class UnlearningMethod:
  """A built unlearning method.

  Attributes:
    name: registry name.
    unlearn: ``(original: ModelState, data, key) -> UnlearnResult``, pure, one seed.
    cost_fn: ``SetSizes -> float``: cost in retain-epoch equivalents (R-ep,
      one forward+backward pass over the retain set; a teacher forward counts ⅓).
    source: paper / repository / write-up the method follows.
    hyperparameters: the values it was built with.
  """

  name: str
  unlearn: Callable[[ModelState, Any, jax.Array], UnlearnResult]
  cost_fn: Callable[[SetSizes], float]
  source: str
  hyperparameters: Mapping[str, Any]

  def cost(self, sizes: SetSizes) -> float:
    return float(self.cost_fn(sizes))


def small_overrides(factory: Callable[..., UnlearningMethod]) -> dict[str, Any]:
  """The ``SMALL_OVERRIDES`` of ``factory``'s module (``{}`` when it has none): tiny-run settings."""
  module = sys.modules.get(getattr(factory, "__module__", ""), None)
  return dict(getattr(module, "SMALL_OVERRIDES", {}))
