"""The no-op check (:mod:`unlearn_jax.degenerate`) on populations built to each case.

Expected flags come from the construction (identical rows, rows equal to the original,
spreads chosen on either side of the tolerances), and the ratios from NumPy written out here.
"""

from __future__ import annotations

import numpy as np
import pytest

from unlearn_jax.analysis import degenerate


def test_degenerate_check_on_synthetic_populations():
  rng = np.random.default_rng(0)
  retrained = rng.normal(0.0, 2.0, (16, 30))
  original = rng.normal(3.0, 1.0, 30)
  same = degenerate.check(np.tile(original, (16, 1)), retrained, original)
  assert same.identical_runs and same.unchanged and same.flagged and same.max_change == 0.0
  # every run moved the same way: identical, but changed
  shifted = degenerate.check(np.tile(original + 1.0, (16, 1)), retrained, original)
  assert shifted.identical_runs and not shifted.unchanged
  assert shifted.max_change == pytest.approx(1.0)
  # tiny per-seed jitter around the original: different runs (barely), original unchanged
  jitter = degenerate.check(original + rng.normal(0, 1e-4, (16, 30)), retrained, original)
  assert jitter.unchanged and jitter.identical_runs
  unlearned = rng.normal(0.0, 1.5, (16, 30))
  working = degenerate.check(unlearned, retrained, original)
  assert not working.flagged
  assert working.spread_ratio == pytest.approx(np.median(unlearned.std(axis=0)) / np.median(retrained.std(axis=0)))
  assert working.max_change == pytest.approx(np.abs(unlearned - original).max())
  d = same.as_dict()
  assert d["flagged"] is True and d["reasons"] == ["identical runs", "original unchanged"]
  assert "WARNING" in same.message("none") and "WARNING" not in working.message("finetune")
  with pytest.raises(ValueError, match="same forget set"):
    degenerate.check(np.zeros((4, 3)), np.zeros((4, 2)), np.zeros(3))


@pytest.mark.parametrize("scale, flagged", [(0.005, True), (0.02, False)])
def test_spread_tolerance_is_relative_to_the_retrained_spread(scale, flagged):
  """Unlearned runs with ``scale`` times the retrained spread: flagged below 1%, not above."""
  rng = np.random.default_rng(1)
  base = rng.normal(size=(64, 40))
  retrained = 5.0 * base  # std 5 per example (up to sampling)
  original = np.full(40, -100.0)  # far away: the change check never fires here
  unlearned = 5.0 * scale * rng.normal(size=(64, 40))
  result = degenerate.check(unlearned, retrained, original)
  want = np.median(unlearned.std(axis=0)) / np.median(retrained.std(axis=0))
  assert result.spread_ratio == pytest.approx(want)
  assert result.identical_runs is flagged and not result.unchanged
  assert result.flagged is flagged and result.reasons() == (["identical runs"] if flagged else [])


def test_change_is_the_largest_move_over_every_seed_and_example():
  rng = np.random.default_rng(2)
  retrained = rng.normal(0.0, 1.0, (32, 10))
  spread = np.median(retrained.std(axis=0))
  original = rng.normal(size=10)
  unlearned = original + rng.normal(0.0, 1.0, (32, 10)) * 1e-6  # moved, but far below 1% of the spread
  unlearned[5, 7] = original[7] + 0.5 * spread  # one run, one example moves by half the spread
  result = degenerate.check(unlearned, retrained, original)
  assert result.max_change == pytest.approx(0.5 * spread)
  assert result.change_ratio == pytest.approx(0.5) and not result.unchanged
  # the same move below the tolerance: unchanged
  tiny = original + np.zeros((32, 10))
  tiny[5, 7] = original[7] + 0.005 * spread
  assert degenerate.check(tiny, retrained, original, change_tolerance=0.01).unchanged
  assert not degenerate.check(tiny, retrained, original, change_tolerance=0.001).unchanged


def test_a_degenerate_reference_flags_only_exact_no_ops():
  retrained = np.ones((8, 5))  # every retrained run identical: spread 0, ratios undefined
  original = np.zeros(5)
  moved = degenerate.check(np.full((8, 5), 2.0) + np.arange(8)[:, None], retrained, original)
  assert moved.spread_ratio is None and moved.change_ratio is None and not moved.flagged
  still = degenerate.check(np.zeros((8, 5)), retrained, original)
  assert still.identical_runs and still.unchanged
  assert still.as_dict()["spread_ratio"] is None and "identical runs and original unchanged" in still.message("none")


def test_shapes_must_describe_one_forget_set():
  for u, r, o in [(np.zeros(4), np.zeros((4, 4)), np.zeros(4)), (np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(2))]:
    with pytest.raises(ValueError, match="same forget set"):
      degenerate.check(u, r, o)
