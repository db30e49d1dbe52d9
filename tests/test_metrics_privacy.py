"""Forgetting quality: conformance vectors, spec facts, fast path vs the brute-force reference."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import METRIC_KERNELS, VECTORS_DIR, mixed_case, random_case
from tests.reference import reference_example, reference_points
from unlearn_jax.metrics import (epsilon_points, epsilon_table, forgetting_metric, forgetting_quality, num_buckets,
                                 per_example_epsilons)
from unlearn_jax.metrics import privacy

pytestmark = METRIC_KERNELS  # one worker under -n: shared kernel compilations (tests/helpers.py)

# The organizers' vectors shipped in tests/data/vectors/. Every .npz found there is checked,
# and so is each of these names even when missing: a lost folder fails, it never skips.
VECTOR_NAMES = ("set1_n512.npz", "set1_n64.npz", "small_n16.npz", "small_n3.npz", "small_n2.npz")
VECTORS = sorted({p.name for p in VECTORS_DIR.glob("*.npz")} | set(VECTOR_NAMES))


@pytest.mark.parametrize("name", VECTORS)
def test_conformance_vectors(name):
  d = np.load(VECTORS_DIR / name)
  res = forgetting_metric(d["unlearned_confs"], d["retrained_confs"])
  assert res.epsilons.shape == d["expected_epsilons"].shape
  np.testing.assert_allclose(res.epsilons, d["expected_epsilons"], rtol=0, atol=1e-4)
  assert res.forgetting_quality == float(d["expected_forgetting_quality"])


def test_vector_set_is_complete():
  names = {p.name for p in VECTORS_DIR.glob("*.npz")}
  assert names >= set(VECTOR_NAMES), f"conformance vectors missing from {VECTORS_DIR}: {set(VECTOR_NAMES) - names}"


def _assert_matches_reference(res, u, r):
  for s in range(u.shape[1]):
    ref = reference_example(u[:, s], r[:, s])
    assert res.epsilons[s] == ref["epsilon"], (s, ref)
    assert bool(res.peaky[s]) == ref["peaky"]
    if ref["family"] is not None:
      assert privacy.FAMILY_NAMES[int(res.family[s])] == ref["family"]
      assert res.fpr[s] == np.float32(ref["fpr"]) and res.fnr[s] == np.float32(ref["fnr"])


@pytest.mark.parametrize("n", [2, 3, 100])
def test_fast_equals_reference(n):
  rng = np.random.default_rng(n)
  u, r = mixed_case(rng, n)
  _assert_matches_reference(forgetting_metric(u, r, chunk_size=4), u, r)


@pytest.mark.parametrize("method", ["bucket", "lattice", "search"])
def test_count_methods_equal_reference(method):
  rng = np.random.default_rng(16)
  u, r = mixed_case(rng, 16)
  _assert_matches_reference(forgetting_metric(u, r, count_method=method, chunk_size=4), u, r)


def test_linspace_matches_numpy_bitwise():
  rng = np.random.default_rng(11)
  starts, stops = rng.normal(size=50) * 30, rng.normal(size=50) * 30 + 4
  nums = rng.integers(2, 900, size=50)
  with jax.enable_x64(True):
    fn = jax.jit(jax.vmap(lambda a, b, n: privacy.linspace_at(jnp.arange(1024), a, b, n)))
    got = np.asarray(fn(jnp.asarray(starts), jnp.asarray(stops), jnp.asarray(nums, jnp.int32)))
  for row, a, b, n in zip(got, starts, stops, nums):
    np.testing.assert_array_equal(row[:n], np.linspace(a, b, n))


def test_bucket_method_crowded_cells_get_more_candidates():
  # 8 models share one confidence value: a lattice cell holds 8 points, beyond the default K = 4.
  rng = np.random.default_rng(5)
  u, r = rng.normal(size=(16, 4)), rng.normal(size=(16, 4)) + 0.2
  u[:8] = 0.123
  res = forgetting_metric(u, r, chunk_size=4, count_method="bucket")
  want = [reference_example(u[:, s], r[:, s])["epsilon"] for s in range(4)]
  np.testing.assert_array_equal(res.epsilons, want)


def test_identical_distributions_score_about_0_18():
  rng = np.random.default_rng(1)
  u, r = rng.normal(size=(16, 160)), rng.normal(size=(16, 160))
  f = forgetting_quality(u, r, chunk_size=4)
  assert 0.15 < f < 0.22


def test_near_constant_unlearned_scores_zero():
  rng = np.random.default_rng(2)
  r = rng.normal(size=(16, 4))
  u = 1.0 + 1e-4 * rng.normal(size=(16, 4))
  res = forgetting_metric(u, r, chunk_size=4)
  assert res.peaky.all()
  np.testing.assert_array_equal(res.epsilons, 50.0)
  assert res.forgetting_quality == 0.0


def test_perfect_separation_scores_zero():
  rng = np.random.default_rng(3)
  r = 0.3 * rng.normal(size=(16, 4))
  u = 0.3 * rng.normal(size=(16, 4)) + 3.0
  res = forgetting_metric(u, r, chunk_size=4)
  assert not res.peaky.any()
  np.testing.assert_array_equal(res.epsilons, 50.0)
  np.testing.assert_array_equal(res.fpr, 0.0)
  np.testing.assert_array_equal(res.fnr, 0.0)
  assert res.forgetting_quality == 0.0


@pytest.mark.parametrize("n,expected", [(2, 0), (3, 2), (4, 4), (16, 6), (64, 10), (512, 14)])
def test_bucket_count_follows_ceil_log(n, expected):
  assert num_buckets(n) == expected == max(0, 2 * int(np.ceil(np.log(n - 1))))
  eps = np.arange(0.0, 9.0, 0.25)
  np.testing.assert_array_equal(epsilon_points(eps, n), reference_points(eps, n))


def test_points_at_bucket_edges():
  eps = np.array([0.0, 0.4999, 0.5, 1.0, 6.236, 6.9999, 7.0, 50.0])
  np.testing.assert_array_equal(epsilon_points(eps, 512),
                                [1.0, 1.0, 0.5, 0.25, 2.0 ** -12, 2.0 ** -13, 0.0, 0.0])


def test_largest_finite_epsilon_at_512():
  table = epsilon_table(512)
  finite = table[np.isfinite(table)]
  assert finite.max() == pytest.approx(np.log(512 - 1 - 512 * 1e-5), abs=1e-5)


def test_epsilon_table_matches_formula():
  n = 7
  table = epsilon_table(n)
  for kfp in range(n + 1):
    for kfn in range(n + 1):
      fpr, fnr = np.float32(kfp) / np.float32(n), np.float32(kfn) / np.float32(n)
      if kfp == 0 and kfn == 0:
        assert table[kfp, kfn] == np.inf
      elif kfp == 0 or kfn == 0:
        assert table[kfp, kfn] == -np.inf
      else:
        one = np.float32(1 - 1e-5)
        with np.errstate(invalid="ignore"):
          terms = [np.log(one - fpr) - np.log(fnr), np.log(one - fnr) - np.log(fpr)]
        terms = [t for t in terms if not np.isnan(t)]
        want = max(0.0, max(terms)) if terms else -np.inf
        assert table[kfp, kfn] == np.float32(want), (kfp, kfn)
  assert table.dtype == np.float32


def test_no_retrace_for_new_num_examples_in_same_bucket():
  rng = np.random.default_rng(4)
  u, r = rng.normal(size=(16, 12)), rng.normal(size=(16, 12))
  per_example_epsilons(u[:, :4], r[:, :4], chunk_size=4)
  before = privacy._chunk_kernel._cache_size()
  for e in (5, 7, 9, 12):  # all pad to chunks of 4, same threshold bucket
    per_example_epsilons(u[:, :e], r[:, :e], chunk_size=4)
  assert privacy._chunk_kernel._cache_size() == before


def test_chunking_does_not_change_results():
  rng = np.random.default_rng(6)
  u, r = random_case(rng, 16, 9, "shifted")
  a = forgetting_metric(u, r, chunk_size=4)  # chunks of 4, the last one padded
  b = forgetting_metric(u[:, 4:8], r[:, 4:8], chunk_size=4)
  np.testing.assert_array_equal(a.epsilons[4:8], b.epsilons)
  np.testing.assert_array_equal(a.thresholds[4:8], b.thresholds)


def test_jit_equals_eager():
  rng = np.random.default_rng(7)
  p, q = np.sort(rng.normal(size=9)), np.sort(np.round(rng.normal(size=9), 1))
  lefts = np.sort(rng.uniform(-3, 3, size=(3, 5)), axis=1)
  lefts[1, 2] = q[4]  # an exact tie
  with jax.enable_x64(True):
    args = (jnp.asarray(p), jnp.asarray(q), jnp.asarray(lefts), jnp.float64(-3.0), jnp.float64(3.0),
            jnp.ones(3, bool), 8)
    jitted = jax.jit(privacy._count_below_bucket, static_argnums=6)(*args)
    with jax.disable_jit():
      eager = privacy._count_below_bucket(*args)
  for a, b in zip(jitted, eager):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(jitted[0]), (p[None, None, :] < lefts[..., None]).sum(-1))
  np.testing.assert_array_equal(np.asarray(jitted[1]), (q[None, None, :] < lefts[..., None]).sum(-1))


def test_x64_is_scoped():
  rng = np.random.default_rng(8)
  forgetting_quality(rng.normal(size=(16, 4)), rng.normal(size=(16, 4)), chunk_size=4)
  assert jnp.zeros(1).dtype == jnp.float32


def test_accepts_jax_arrays_and_reports_best_attack():
  rng = np.random.default_rng(9)
  u, r = rng.normal(size=(16, 4)), rng.normal(size=(16, 4)) + 1.0
  res = forgetting_metric(jnp.asarray(u, jnp.float32), jnp.asarray(r, jnp.float32), chunk_size=4)
  assert res.epsilons.shape == (4,) and res.num_examples == 4 and res.num_models == 16
  assert np.all(res.retrained_is_positive)
  interval = res.family == privacy.FAMILY_INTERVAL
  assert np.all(res.thresholds[interval, 0] <= res.thresholds[interval, 1] + 4.0)
  single = res.family == privacy.FAMILY_SINGLE
  assert np.all(np.isinf(res.thresholds[single, 1]))


@pytest.mark.parametrize("u_shape,r_shape,match", [
    ((4, 3), (4, 2), "same shape"),
    ((1, 3), (1, 3), "N >= 2"),
    ((4,), (4,), "shape"),
    ((4, 0), (4, 0), "E >= 1"),
])
def test_bad_shapes(u_shape, r_shape, match):
  with pytest.raises(ValueError, match=match):
    forgetting_quality(np.zeros(u_shape), np.zeros(r_shape))


def test_non_finite_rejected():
  u = np.zeros((4, 2))
  u[1, 1] = np.nan
  with pytest.raises(ValueError, match="unlearned_confs must be finite"):
    forgetting_quality(u, np.ones((4, 2)))


def _wide_cases(rng):
  """Single-threshold grids that are tiny, empty, huge, or coarser than float32 can resolve.

  Every case is ``[16, 4]``: one chunk of the shape the other tests here use, so the cases
  share two compiled kernels (the wide grids' search steps and the ordinary ones).
  """
  n, e = 16, 4
  near_2e5 = 2e5 + 50 * rng.normal(size=(n, e)), 2e5 + 50 * rng.normal(size=(n, e)) + 20  # f32 ulp 0.016 > 0.01
  outlier_u, outlier_r = rng.normal(size=(n, e)), rng.normal(size=(n, e))
  outlier_u[3, 0] = 2e4  # T = 2,000,000 grid points
  tiny_u, tiny_r = rng.integers(0, 7, size=(n, e)) / 1000, rng.integers(0, 7, size=(n, e)) / 1000  # T = 1
  tiny_u[:4, 0], tiny_r[:4, 0] = [0.0, 0.005, 0.002, 0.004], [0.001, 0.006, 0.003, 0.0]
  const = np.full((n, e), 1.5), np.tile([1.75, 1.5], (n, e // 2))  # ranges 0: T = 25 and T = 0
  return [near_2e5, (outlier_u, outlier_r), (tiny_u, tiny_r), const]


def test_single_threshold_grid_without_materialising_it_equals_reference():
  for u, r in _wide_cases(np.random.default_rng(12)):
    _assert_matches_reference(forgetting_metric(u, r, chunk_size=4), u, r)


def test_linspace_of_one_point_is_its_start():
  with jax.enable_x64(True):
    got = privacy.linspace_at(jnp.arange(1), jnp.float64(0.25), jnp.float64(0.75), jnp.int32(1))
  np.testing.assert_array_equal(np.asarray(got), np.linspace(0.25, 0.75, 1))


_WIDE_RANGE_SCRIPT = """
import resource, sys, time
import numpy as np
from unlearn_jax.metrics import forgetting_metric, privacy
scale, outlier_value = float(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
t0 = time.perf_counter()
u, r = rng.normal(size=(8, 4)) * scale, rng.normal(size=(8, 4)) * scale
steps = privacy.search_steps(u, r)
wide = forgetting_metric(u, r)
u2, r2 = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
u2[0, 0] = outlier_value
outlier = forgetting_metric(u2, r2)
try:  # this process's own peak (ru_maxrss can carry the forking parent's size across exec)
  peak_kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration):
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(steps, time.perf_counter() - t0, peak_kib, wide.epsilons.min())
"""


def _wide_range_run(scale: float, outlier_value: float):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _WIDE_RANGE_SCRIPT, str(scale), str(outlier_value)], capture_output=True,
                       text=True, env=env, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr[-2000:]
  steps, seconds, max_rss_kib, min_eps = out.stdout.split()
  assert float(min_eps) >= 0.0
  return int(steps), int(max_rss_kib) / 1024


def test_wide_range_memory_is_bounded():
  # Issue: two 8x5 arrays of normal x 2e5 (grids of ~1e8 points) once took 21 GB; an outlier of 2e4 665 MB.
  # Peak memory must not grow with the range: the wide inputs' peak RSS is compared with the same
  # program on ordinary inputs (grids of ~1e3 points) in an identical subprocess, and bounded absolutely.
  # The arrays are 8x4, one chunk (the memory is per chunk): each subprocess compiles a single kernel.
  steps, wide_mib = _wide_range_run(2e5, 2e4)
  ordinary_steps, ordinary_mib = _wide_range_run(1.0, 1.0)
  assert steps >= 27 > ordinary_steps + 10  # the wide grid really has ~1e8 points, the ordinary ~1e3
  assert wide_mib < ordinary_mib + 128, (wide_mib, ordinary_mib)
  assert wide_mib < 1024, f"peak RSS {wide_mib:.0f} MiB"
