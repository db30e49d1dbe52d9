"""The jitted competition kernel equals the float64 brute-force reference, example by example.

Randomized over the input kinds where an ulp matters: i.i.d., shifted, tied, coarse
(rounded to 0.01), duplicated, heavy-tailed and tight (range ~0.01) columns, plus "on
edge" columns whose values are placed exactly on the interval family's left-edge grid
points as numpy computes them (a count there flips if a grid point is off by one ulp).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.metrics import privacy
from unlearn_jax.metrics.privacy import forgetting_metric
from tests.helpers import METRIC_KERNELS
from tests.reference import reference_epsilons

pytestmark = METRIC_KERNELS  # one worker under -n: shared kernel compilations (tests/helpers.py)

KINDS = ("iid", "shifted", "tied", "coarse", "duplicated", "heavy", "tight", "on_edge")


def _left_edges(p):
  """Every left-edge grid point of the interval family of a column pair whose smaller-range column is ``p``."""
  width = p.max() - p.min()
  a = p.min() + width - privacy.BUFFER
  b = p.max() + privacy.BUFFER
  rights = np.linspace(a, b, int(np.ceil((b - a) * privacy.PER_UNIT)))
  return np.concatenate([np.linspace(r - width - privacy.BUFFER, r - width + privacy.BUFFER, privacy.NUM_LEFT)
                         for r in rights])


def _on_edge(rng, n):
  """One example whose inner values sit exactly on left-edge grid points (ranges kept, so the grids are too)."""
  u = rng.normal(size=n) * rng.choice([0.005, 0.05, 1.0])
  r = rng.normal(size=n) * rng.choice([0.005, 0.05, 1.0]) + rng.normal() * 0.01
  p = u if np.ptp(u) <= np.ptp(r) else r
  edges = _left_edges(p)
  for col in (u, r):
    inner = [i for i in np.argsort(col)[1:-1]]
    ok = edges[(edges > col.min()) & (edges < col.max())]
    if inner and ok.size:
      pick = rng.choice(inner, size=(len(inner) + 1) // 2, replace=False)
      col[pick] = rng.choice(ok, size=pick.size)
  return u, r


def make_case(rng, kind, n):
  """``[n]`` unlearned and retrained confidences of one example of ``kind``."""
  if kind == "iid":
    return rng.normal(size=n), rng.normal(size=n)
  if kind == "shifted":
    return rng.normal(size=n), rng.normal(size=n) * rng.uniform(0.5, 2) + rng.uniform(-3, 3)
  if kind == "tied":
    return np.round(rng.normal(size=n) * 4) / 4, np.round(rng.normal(size=n) * 4) / 4
  if kind == "coarse":
    return np.round(rng.normal(size=n) * 100) / 100, np.round(rng.normal(size=n) * 100) / 100
  if kind == "duplicated":
    base = rng.normal(size=n)
    return base.copy(), base[rng.permutation(n)] + (rng.random(n) < 0.5) * rng.normal(size=n)
  if kind == "heavy":
    return rng.standard_t(1.5, size=n), rng.standard_t(1.5, size=n) * 2
  if kind == "tight":
    c = rng.normal() * 5
    return c + rng.normal(size=n) * 0.005, c + rng.normal(size=n) * 0.005
  if kind == "on_edge":
    return _on_edge(rng, n)
  raise ValueError(kind)


def make_cases(seed, per_kind_and_n, sizes):
  """``[N, E]`` arrays per N: ``per_kind_and_n`` examples of every kind side by side."""
  rng = np.random.default_rng(seed)
  out = []
  for n in sizes:
    cols = [make_case(rng, kind, n) for kind in KINDS for _ in range(per_kind_and_n)]
    out.append((np.stack([c[0] for c in cols], 1), np.stack([c[1] for c in cols], 1)))
  return out


def _assert_equal_to_reference(seed, per_kind_and_n, sizes, count_method="lattice"):
  mismatches = []
  for u, r in make_cases(seed, per_kind_and_n, sizes):
    got = forgetting_metric(u, r, count_method=count_method).epsilons
    want = reference_epsilons(u, r)
    bad = np.nonzero(got != want)[0]
    mismatches += [(u.shape[0], KINDS[s // per_kind_and_n], got[s], want[s]) for s in bad]
  assert not mismatches, mismatches


def test_left_edge_grids_and_counts_match_numpy_bitwise():
  # The left-edge grids divide by the constant NUM_LEFT - 1; XLA would turn that into a
  # multiplication by the reciprocal (off by an ulp for ~20% of the points).
  rng = np.random.default_rng(3)
  rows = 256
  starts = rng.normal(size=rows) * 3
  stops = starts + 4.0 + rng.normal(size=rows) * 1e-3
  want = np.stack([np.linspace(a, b, privacy.NUM_LEFT) for a, b in zip(starts, stops)])
  x = np.sort(rng.choice(want.reshape(-1), size=64))  # data exactly on grid points
  with jax.enable_x64(True):
    j = jnp.arange(privacy.NUM_LEFT)[None, :]
    grid = jax.jit(jax.vmap(lambda a, b: privacy.linspace_at(j, a[:, None], b[:, None], privacy.NUM_LEFT)))
    got = np.asarray(grid(jnp.asarray(starts).reshape(4, -1), jnp.asarray(stops).reshape(4, -1))).reshape(want.shape)
    counts = jax.jit(jax.vmap(privacy._count_below_rows, in_axes=(None, 0, 0)))
    below = np.asarray(counts(jnp.asarray(x), jnp.asarray(starts).reshape(4, -1), jnp.asarray(stops).reshape(4, -1)))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(below.reshape(want.shape), (x[None, None, :] < want[:, :, None]).sum(-1))


def test_kernel_equals_reference_randomized():
  # 8 kinds x 3 sizes x 3 = 72 examples (the slow test below runs 4,096).
  _assert_equal_to_reference(seed=0, per_kind_and_n=3, sizes=(2, 5, 16))


@pytest.mark.parametrize("method", ["bucket", "search"])
def test_other_count_methods_equal_reference_randomized(method):
  _assert_equal_to_reference(seed=1, per_kind_and_n=1, sizes=(8,), count_method=method)


@pytest.mark.slow
def test_kernel_equals_reference_randomized_large():
  # 8 kinds x 8 sizes x 64 = 4,096 examples up to N = 64 (a few CPU minutes).
  _assert_equal_to_reference(seed=2, per_kind_and_n=64, sizes=(2, 3, 5, 8, 16, 24, 32, 64))
