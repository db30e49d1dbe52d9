"""One interface for every evaluation of a scored result: ``evaluator(populations, request) -> field or None``.

Each evaluator reads the scored :class:`~unlearn_jax.results.record.Populations` (and the
:class:`Request`) and returns the value of its ``results.json`` field, or ``None`` when it
was not asked for. :data:`EVALUATORS` maps field names to evaluators in the order they
are recorded; :func:`evaluate_all` runs them. The protocol calls it once per scored
result, whatever the entry point (``evaluate``, :func:`unlearn_jax.evaluate`, a sweep point).

* ``ulira`` / ``klom``: the many-model attacks (:mod:`unlearn_jax.analysis.evaluations`);
* ``bootstrap``: model- and example-bootstrap intervals (:mod:`unlearn_jax.analysis.uncertainty`);
* ``klom_baseline``: KLOM of the ceiling's retrained models against the reference ones (where
  those models are stored; else of the reference's two halves, at N/2 per side): the value of
  KLOM when nothing separates the populations;
* ``ceiling``: F against the setup's ceiling (F of ``retrain`` as the method, computed by the
  protocol against the same reference, or read from the cache: :mod:`unlearn_jax.results.ceiling`),
  with its own model-bootstrap interval under ``--bootstrap`` where the ceiling's models are stored;
* ``degenerate``: the no-op check (:mod:`unlearn_jax.analysis.degenerate`).

Evaluations of several results (``compare``: paired per-example differences;
``stability``: rankings over subsamples) read the same populations
(:mod:`unlearn_jax.analysis.stability`, ``unlearn-jax compare``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np

from unlearn_jax.analysis import degenerate, evaluations, uncertainty
from unlearn_jax.results import ceiling as ceiling_store
from unlearn_jax.results.progress import Progress
from unlearn_jax.results.record import Populations


@dataclasses.dataclass(frozen=True)
class Request:
  """What to evaluate beside the competition score.

  Attributes:
    metrics: the evaluations asked for (``competition`` always; ``ulira``, ``klom``).
    bootstrap: draws of the bootstrap intervals (0: none).
    seed: seed of U-LiRA's folds and of the bootstrap draws (the run's root seed).
    forgetting_quality: the result's F (the ceiling's ratio).
    ceiling: the setup's stored ceiling at this N (``None``: unknown, no ``ceiling`` field).
    ceiling_outputs: the ceiling run's per-model outputs at the scored seeds (``forget_confidence``
      ``[N, E]``, and the margins where it stored them), a second retrained population of this
      setup; ``None`` when its models are not stored or not needed. With it, ``--bootstrap`` gives
      the ceiling its own interval and ``klom`` its retrain-vs-retrain baseline.
    budget: ``budget(stage)`` gives a model bootstrap of ``stage`` its ``progress(done, total)`` callback
      that states its cost and holds it to the run's time budget (``None``: none).
    progress: where the model bootstraps report their (example, draw) pairs done (``None``: silent).
  """

  metrics: tuple[str, ...] = ("competition",)
  bootstrap: int = 0
  seed: int = 0
  forgetting_quality: float = float("nan")
  ceiling: Optional[Mapping[str, Any]] = None
  ceiling_outputs: Optional[Mapping[str, Any]] = None
  budget: Optional[Callable[[str], Optional[Callable[[int, int], None]]]] = None
  progress: Optional[Progress] = None


Evaluator = Callable[[Populations, Request], Optional[Any]]


def ulira(pops: Populations, request: Request) -> Optional[dict[str, Any]]:
  if "ulira" not in request.metrics:
    return None
  return evaluations.many_model_scores(("ulira",), pops.unlearned, pops.retrained, seed=request.seed)["ulira"]


def klom(pops: Populations, request: Request) -> Optional[dict[str, Any]]:
  if "klom" not in request.metrics:
    return None
  return evaluations.many_model_scores(("klom",), pops.unlearned, pops.retrained, seed=request.seed)["klom"]


def klom_baseline(pops: Populations, request: Request) -> Optional[dict[str, Any]]:
  """KLOM when nothing separates the populations: what retraining itself scores.

  With the ceiling's models stored: those N retrained models against the N reference ones
  (``"source": "ceiling"``). Without them: the reference's first N/2 models against its other
  N/2 (``"source": "retrained halves"``), a baseline at N/2 models per side, which is above
  the one at N (KLOM between two samples of one process falls with their size). Per split
  both sides have; ``"num_models"`` is the models per side.
  """
  if "klom" not in request.metrics:
    return None
  retrained = {k: np.asarray(v) for k, v in pops.retrained.items() if np.ndim(v)}
  if request.ceiling_outputs is not None:
    first, second, source = request.ceiling_outputs, retrained, "ceiling"
  else:
    half = retrained["forget_confidence"].shape[0] // 2
    if half < 2:
      return None
    first = {k: v[:half] for k, v in retrained.items()}
    second = {k: v[half:2 * half] for k, v in retrained.items()}
    source = "retrained halves"
  out = evaluations.many_model_scores(("klom",), first, second, seed=request.seed)["klom"]
  models = int(np.asarray(first["forget_confidence"]).shape[0])
  return out | {"source": source, "num_models": models}


def _pairs_done(request: Request, stage: str) -> Optional[Callable[[int, int], None]]:
  """The ``progress(done, total)`` callback of a model bootstrap: reports to the request's progress and
  holds the stage to the run's time budget (``None`` when there is neither)."""
  calls = []
  if request.progress is not None:
    calls.append(lambda done, total: request.progress.count(stage, done, total, "(example, draw) pairs"))
  if request.budget is not None:
    held = request.budget(stage)
    if held is not None:
      calls.append(held)
  if not calls:
    return None

  def after_block(done: int, total: int) -> None:
    for call in calls:
      call(done, total)

  return after_block


def bootstrap(pops: Populations, request: Request) -> Optional[dict[str, Any]]:
  if not request.bootstrap:
    return None
  return uncertainty.bootstrap_intervals(pops.unlearned, pops.retrained, pops.epsilons, num_draws=request.bootstrap,
                                         seed=request.seed, progress=_pairs_done(request, "bootstrap"))


def ceiling(pops: Populations, request: Request) -> Optional[dict[str, Any]]:
  if request.ceiling is None:
    return None
  out = ceiling_store.summary(request.forgetting_quality, request.ceiling)
  if request.bootstrap and request.ceiling_outputs is not None:  # the ceiling is one noisy draw too
    out["interval"] = uncertainty.forgetting_quality_interval(
        request.ceiling_outputs["forget_confidence"], pops.retrained["forget_confidence"],
        num_draws=request.bootstrap, seed=request.seed, progress=_pairs_done(request, "bootstrap: ceiling"))
  return out


def no_op(pops: Populations, request: Request) -> Optional[dict[str, Any]]:
  del request
  if pops.original_confidence is None:
    return None
  return degenerate.check(pops.unlearned["forget_confidence"], pops.retrained["forget_confidence"],
                          pops.original_confidence).as_dict()


EVALUATORS: dict[str, Evaluator] = {"degenerate": no_op, "ulira": ulira, "klom": klom,
                                    "klom_baseline": klom_baseline, "bootstrap": bootstrap, "ceiling": ceiling}


def evaluate_all(pops: Populations, request: Request) -> dict[str, Any]:
  """``{field: value}`` of every evaluator that was asked for (absent ones are left out)."""
  out = {}
  for name, evaluator in EVALUATORS.items():
    value = evaluator(pops, request)
    if value is not None:
      out[name] = value
  return out
