"""The many-model evaluations beside the competition score: which exist and how results record them.

``competition`` is the forgetting quality and final score (always computed). ``ulira``
is the per-example likelihood-ratio attack of Hayes et al. (:func:`unlearn_jax.metrics.ulira.ulira`)
on the forget confidences; ``klom`` the KL divergence of margins of Georgiev et al.
(:func:`unlearn_jax.metrics.klom.klom`) on the forget set and, where margins were recorded
(:mod:`unlearn_jax.protocol.margins`), on fixed retain and held-out subsets. Definitions:
``docs/evaluations.md``.

Both ``evaluate --metrics`` and ``score --metrics`` go through :func:`many_model_scores`,
so a results file from either has the same ``ulira`` / ``klom`` fields.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

METRIC_NAMES = ("competition", "ulira", "klom")
DEFAULT_METRICS = ("competition",)
ULIRA_FOLDS = 2


def parse_metrics(text: Optional[str]) -> tuple[str, ...]:
  """``"competition,ulira,klom"`` -> the validated tuple (``competition`` always first and included)."""
  if text is None:
    return DEFAULT_METRICS
  names = [t.strip() for t in str(text).split(",") if t.strip()]
  check_metrics(names)
  return ("competition",) + tuple(n for n in METRIC_NAMES[1:] if n in names)


def check_metrics(names: Sequence[str]) -> None:
  """Raises a one-line ``ValueError`` for an unknown evaluation name."""
  if isinstance(names, str):
    raise ValueError(f"metrics must be a list of names, got the string {names!r}")
  unknown = [n for n in names if n not in METRIC_NAMES]
  if unknown:
    raise ValueError(f"unknown metric(s) {unknown}; expected a comma-separated subset of {list(METRIC_NAMES)}")


def check_ulira_size(num_models: int, folds: int = ULIRA_FOLDS) -> None:
  """Raises U-LiRA's one-line ``ValueError`` up front when N models are too few for ``folds`` folds.

  Runs the attack itself on a tiny random population of the same N (one example), so the
  rule is the metric's own, checked before any model is trained.
  """
  from unlearn_jax.metrics.ulira import ulira
  rng = np.random.default_rng(0)
  ulira(rng.normal(size=(num_models, 1)), rng.normal(size=(num_models, 1)), folds=folds)


def many_model_scores(metrics: Sequence[str], unlearned: Mapping[str, np.ndarray], retrained: Mapping[str, np.ndarray],
                      *, folds: int = ULIRA_FOLDS, seed: int = 0) -> dict[str, Any]:
  """``{"ulira": {...}, "klom": {...}}`` for the requested ``metrics`` (absent names are left out).

  ``unlearned`` / ``retrained`` map ``forget_confidence`` ``[N, E]`` and, optionally,
  ``retain_margin`` / ``heldout_margin`` ``[N, M]`` to host arrays. KLOM reports the mean
  and 95th percentile over examples per split present in both populations.
  """
  out: dict[str, Any] = {}
  if "ulira" in metrics:
    from unlearn_jax.metrics.ulira import ulira
    scores = ulira(np.asarray(unlearned["forget_confidence"]), np.asarray(retrained["forget_confidence"]),
                   folds=folds, seed=seed)
    out["ulira"] = {k: float(v) for k, v in scores.items()} | {"folds": int(folds)}
  if "klom" in metrics:
    from unlearn_jax.metrics.klom import klom, klom_summary
    summary = {}
    for split, name in (("forget", "forget_confidence"), ("retain", "retain_margin"), ("heldout", "heldout_margin")):
      if name in unlearned and name in retrained:
        values = klom(np.asarray(unlearned[name]), np.asarray(retrained[name]))
        summary[split] = {k: float(v) for k, v in klom_summary(values).items()} | {
            "num_examples": int(np.asarray(values).shape[0])}
    out["klom"] = summary
  return out
