"""Silent no-ops: a method whose N unlearned models are (nearly) identical, or equal the original.

Such a method scores 0 under the competition metric (every example's unlearned
distribution is "peaky"), which reads as "the method fails to forget" although
the method did nothing at all: a learning rate too small for the forget set
(NegGrad at 1e-4 on a 2% forget set), a conv-only edit on a model without
convolutions, a bug. :func:`check` measures it on the forget-set logit-scaled
confidences the protocol already has, in units of the retrained models' own
spread, so the tolerances do not depend on the data or the model:

* **spread**: per forget example, the standard deviation across seeds; the
  median over examples of the unlearned one against the retrained one
  (``spread_ratio``). Below ``spread_tolerance`` the runs are (nearly) identical;
* **change**: the largest ``|c_unlearned - c_original|`` over every seed and
  example, against the retrained spread (``change_ratio``). Below
  ``change_tolerance`` no run moved the original's confidences.

Host NumPy, on arrays the protocol computed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

SPREAD_TOLERANCE = 0.01
CHANGE_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class DegeneracyCheck:
  """The numbers behind the verdict (confidences in logit-scaled units).

  Attributes:
    identical_runs: the unlearned spread is below ``spread_tolerance`` of the retrained spread.
    unchanged: no unlearned confidence moved by ``change_tolerance`` of the retrained spread.
    spread_unlearned, spread_retrained: median over forget examples of the across-seed std.
    spread_ratio: ``spread_unlearned / spread_retrained`` (``None`` when the retrained spread is 0).
    max_change: largest ``|c_unlearned - c_original|`` over seeds and examples.
    change_ratio: ``max_change / spread_retrained`` (``None`` when the retrained spread is 0).
    spread_tolerance, change_tolerance: the thresholds used.
  """

  identical_runs: bool
  unchanged: bool
  spread_unlearned: float
  spread_retrained: float
  spread_ratio: Optional[float]
  max_change: float
  change_ratio: Optional[float]
  spread_tolerance: float
  change_tolerance: float

  @property
  def flagged(self) -> bool:
    return self.identical_runs or self.unchanged

  def reasons(self) -> list[str]:
    out = []
    if self.identical_runs:
      out.append("identical runs")
    if self.unchanged:
      out.append("original unchanged")
    return out

  @classmethod
  def from_dict(cls, record: Mapping[str, Any]) -> "DegeneracyCheck":
    """The check recorded by :meth:`as_dict`."""
    return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})

  def as_dict(self) -> dict[str, Any]:
    return {"flagged": self.flagged, "reasons": self.reasons(), **dataclasses.asdict(self)}

  def message(self, method: str) -> str:
    """One progress line: a warning naming the numbers when flagged."""
    numbers = (f"unlearned spread {self.spread_unlearned:.3g} vs retrained {self.spread_retrained:.3g}, "
               f"max change from the original {self.max_change:.3g}")
    if not self.flagged:
      return f"{method} moves the original and its runs differ ({numbers})"
    return (f"WARNING: {method} looks like a no-op ({' and '.join(self.reasons())}: {numbers}); "
            f"its score says nothing about forgetting")


def _ratio(value: float, reference: float) -> Optional[float]:
  return value / reference if reference > 0 else None


def check(unlearned_confidence: np.ndarray, retrained_confidence: np.ndarray, original_confidence: np.ndarray,
          spread_tolerance: float = SPREAD_TOLERANCE, change_tolerance: float = CHANGE_TOLERANCE) -> DegeneracyCheck:
  """Checks ``[N_U, F]`` unlearned against ``[N_R, F]`` retrained and ``[F]`` original confidences.

  With a retrained spread of 0 (a degenerate reference) a method is flagged only
  when its own spread, or its change, is exactly 0.
  """
  u = np.asarray(unlearned_confidence, np.float64)
  r = np.asarray(retrained_confidence, np.float64)
  o = np.asarray(original_confidence, np.float64).reshape(-1)
  if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1] or o.shape[0] != u.shape[1]:
    raise ValueError(f"confidences must be [N, F], [N, F] and [F] over the same forget set, got "
                     f"{u.shape}, {r.shape} and {o.shape}")
  spread_u = float(np.median(u.std(axis=0)))
  spread_r = float(np.median(r.std(axis=0)))
  max_change = float(np.abs(u - o[None, :]).max()) if u.size else 0.0
  spread_ratio, change_ratio = _ratio(spread_u, spread_r), _ratio(max_change, spread_r)
  identical = spread_u == 0.0 or (spread_ratio is not None and spread_ratio < spread_tolerance)
  unchanged = max_change == 0.0 or (change_ratio is not None and change_ratio < change_tolerance)
  return DegeneracyCheck(bool(identical), bool(unchanged), spread_u, spread_r, spread_ratio, max_change,
                         change_ratio, float(spread_tolerance), float(change_tolerance))
