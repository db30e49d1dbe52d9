"""Bootstrap intervals, paired comparison and ranking stability on synthetic populations (pure functions).

References are plain loops over the public metric (``forgetting_quality`` / ``final_score``
per draw or subsample), never the batched code under test.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from unlearn_jax.analysis import evaluations
from unlearn_jax.results import populations
from unlearn_jax.analysis import stability
from unlearn_jax.analysis import uncertainty
from unlearn_jax.analysis import compare
from unlearn_jax.metrics import final_score, forgetting_quality


# One shape for the bootstrap tests below, so they share one compiled bootstrap kernel; under
# ``pytest -n`` (``--dist loadgroup``) they run on one worker, which compiles it once.
N_BS, E_BS, B_BS = 8, 48, 40
ONE_BOOTSTRAP = pytest.mark.xdist_group("test_research_stats.py-bootstrap")


def _pops(u_conf, r_conf, rng):
  n = u_conf.shape[0]
  acc = lambda: rng.uniform(0.8, 1.0, n)
  return ({"forget_confidence": u_conf, "retain_accuracy": acc(), "test_accuracy": acc()},
          {"forget_confidence": r_conf, "retain_accuracy": acc(), "test_accuracy": acc()})


@ONE_BOOTSTRAP
def test_bootstrap_of_a_constant_population_has_zero_width():
  rng = np.random.default_rng(0)
  u, r = _pops(np.full((N_BS, E_BS), 2.0), np.full((N_BS, E_BS), 2.0), rng)
  u["retain_accuracy"][:] = 0.9
  r["retain_accuracy"][:] = 0.95
  u["test_accuracy"][:] = r["test_accuracy"][:] = 0.9
  eps = np.full(E_BS, 50.0)  # every example is "peaky": F = 0 for every draw
  # every draw of a constant population is the same population: a few draws show it; so is every jackknife set
  out = uncertainty.bootstrap_intervals(u, r, eps, num_draws=4, seed=1)
  for name in ("forgetting_quality", "final_score", "example_forgetting_quality", "jackknife_forgetting_quality"):
    assert out[name]["lo"] == out[name]["hi"] == 0.0, name
    assert out[name]["std"] == 0.0


@ONE_BOOTSTRAP
def test_bootstrap_of_one_distribution_covers_the_ceiling():
  # u and r: two samples of one distribution (a perfect unlearner); the ceiling: a third sample against r
  rng = np.random.default_rng(3)
  u_conf, r_conf, c_conf = (rng.normal(size=(N_BS, E_BS)) for _ in range(3))
  u, r = _pops(u_conf, r_conf, rng)
  from unlearn_jax.metrics import per_example_epsilons
  eps = per_example_epsilons(u_conf, r_conf)
  out = uncertainty.bootstrap_intervals(u, r, eps, num_draws=B_BS, seed=0)["forgetting_quality"]
  ceiling = forgetting_quality(c_conf, r_conf)
  assert out["lo"] <= ceiling <= out["hi"]
  assert out["point"] == pytest.approx(forgetting_quality(u_conf, r_conf))
  # duplicated models make the populations easier to separate: the raw draws sit below F
  assert out["percentile"][1] < out["point"] and out["bias"] < 0


@ONE_BOOTSTRAP
def test_forgetting_quality_interval_is_the_bootstrap_intervals_f():
  # the ceiling's interval (F alone) is the interval --bootstrap reports for F, on the same draws
  rng = np.random.default_rng(6)
  u_conf, r_conf = rng.normal(size=(N_BS, E_BS)), rng.normal(0.5, 1.0, size=(N_BS, E_BS))
  u, r = _pops(u_conf, r_conf, rng)
  from unlearn_jax.metrics import per_example_epsilons
  full = uncertainty.bootstrap_intervals(u, r, per_example_epsilons(u_conf, r_conf), num_draws=B_BS, seed=2)
  assert uncertainty.forgetting_quality_interval(u_conf, r_conf, num_draws=B_BS, seed=2) == full["forgetting_quality"]
  with pytest.raises(ValueError, match="draws"):
    uncertainty.forgetting_quality_interval(u_conf, r_conf, num_draws=1)


def test_final_score_of_draws_matches_a_loop_over_final_score():
  rng = np.random.default_rng(5)
  u, r = _pops(rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng)
  fq = rng.uniform(0, 0.2, 7)
  iu, ir = rng.integers(0, 6, (7, 6)), rng.integers(0, 6, (7, 6))
  got = uncertainty.final_scores_of_draws(fq, iu, ir, u, r)
  want = [final_score(fq[b], u["retain_accuracy"][iu[b]], r["retain_accuracy"][ir[b]], u["test_accuracy"][iu[b]],
                      r["test_accuracy"][ir[b]]) for b in range(7)]
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_bootstrap_rejects_too_few_draws():
  rng = np.random.default_rng(0)
  u, r = _pops(rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), rng)
  with pytest.raises(ValueError, match="draws"):
    uncertainty.bootstrap_intervals(u, r, np.zeros(2), num_draws=1)


def test_compare_of_a_result_with_itself_is_not_distinguishable():
  pts = np.random.default_rng(0).choice([0.0, 0.25, 0.5, 1.0], size=100)
  out = compare.compare_points(pts, pts, draws=200)
  assert out["verdict"] == "not distinguishable at this N"
  assert out["mean_difference"] == 0.0 and out["interval"] == [0.0, 0.0] and out["wilcoxon_p"] == 1.0


def test_compare_names_the_better_method():
  rng = np.random.default_rng(1)
  b = rng.choice([0.0, 0.0625, 0.125], size=200)
  a = b + rng.choice([0.0, 0.25, 0.5], size=200, p=[0.2, 0.4, 0.4])
  out = compare.compare_points(a, b, draws=500)
  assert out["verdict"] == "A is better" and out["wilcoxon_p"] < 1e-6
  assert out["interval"][0] > 0 and out["interval"][0] <= out["mean_difference"] <= out["interval"][1]
  assert out["mean_difference"] == pytest.approx(np.mean(a - b))
  assert compare.compare_points(b, a, draws=500)["verdict"] == "B is better"


def _planted(n=8, e=10, separated=(0, 3, 6), seed=0):
  """One retrained population; method k's unlearned one equals a shared sample except that its first
  ``separated[k]`` examples are moved far away (0 points each), so F falls as k grows, on any subsample."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(n, e))
  r = [rng.normal(size=(n, e))] * len(separated)
  u = [base + 100.0 * (np.arange(e) < s) for s in separated]
  return u, r


def test_subsampled_quality_matches_a_loop_over_subsamples():
  u, r = _planted()
  rng = np.random.default_rng(4)
  iu = np.stack([rng.permutation(8)[:4] for _ in range(3)])
  ir = np.stack([rng.permutation(8)[:4] for _ in range(3)])
  got = stability.subsampled_quality(u, r, iu, ir)
  want = [[forgetting_quality(u[m][iu[k]], r[m][ir[k]]) for k in range(3)] for m in range(3)]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_stability_recovers_a_planted_ordering_at_full_n():
  u, r = _planted()
  out = stability.stability(["near", "mid", "far"], u, r, sizes=[4, 8], repeats=3)
  full = [forgetting_quality(a, b) for a, b in zip(u, r)]
  assert list(out["full"].values()) == pytest.approx(full)
  assert full[0] > full[1] > full[2]  # the planted ordering: a larger shift, a lower F
  at_full = [row for row in out["rows"] if row["n"] == 8]
  assert [row["method"] for row in at_full] == ["near", "mid", "far"]
  assert all(row["tau_of_means"] == 1.0 and row["mean_tau"] == 1.0 and row["std_F"] == 0.0 for row in at_full)
  assert {row["n"] for row in out["rows"]} == {4, 8}
  text = stability.table(out, "csv").splitlines()
  assert text[0] == ",".join(stability.COLUMNS) and len(text) == 1 + 6


def test_stability_taus_match_a_loop_over_subsamples():
  """Every tau column recomputed from the documented draws: per repeat, one permutation per population,
  the first n models the subsample, the next n its disjoint partner; F by the plain metric."""
  from scipy import stats
  rng0 = np.random.default_rng(3)
  n_models, e = 12, 6
  r = [rng0.normal(size=(n_models, e))] * 3
  u = [rng0.normal(d, 1.0, size=(n_models, e)) for d in (0.0, 0.7, 1.5)]
  out = stability.stability(["a", "b", "c"], u, r, sizes=[4, 8, 12], repeats=5, seed=11, level=0.8)
  rng = np.random.default_rng(11)
  full = [forgetting_quality(a, b) for a, b in zip(u, r)]

  def tau(x, y):
    with np.errstate(all="ignore"):
      return float(stats.kendalltau(x, y).statistic)

  for n in (4, 8):
    pu = [rng.permutation(n_models) for _ in range(5)]
    pr = [rng.permutation(n_models) for _ in range(5)]
    first = [[forgetting_quality(u[m][pu[k][:n]], r[m][pr[k][:n]]) for m in range(3)] for k in range(5)]
    single = np.array([tau(f, full) for f in first])
    row = next(x for x in out["rows"] if x["n"] == n)
    ok = single[np.isfinite(single)]
    assert row["mean_tau"] == pytest.approx(ok.mean())
    assert [row["tau_lo"], row["tau_hi"]] == pytest.approx(list(np.quantile(ok, [0.1, 0.9])))
    if 2 * n <= n_models:
      second = [[forgetting_quality(u[m][pu[k][n:2 * n]], r[m][pr[k][n:2 * n]]) for m in range(3)] for k in range(5)]
      pair = np.array([tau(a, b) for a, b in zip(first, second)])
      ok = pair[np.isfinite(pair)]
      assert row["disjoint_tau"] == pytest.approx(ok.mean())
      assert [row["disjoint_lo"], row["disjoint_hi"]] == pytest.approx(list(np.quantile(ok, [0.1, 0.9])))
    else:
      assert np.isnan(row["disjoint_tau"]) and np.isnan(row["disjoint_lo"])
    assert row["mean_F"] == pytest.approx(np.mean([f[0] for f in first]))
  at_full = next(x for x in out["rows"] if x["n"] == 12)
  assert at_full["mean_tau"] == at_full["tau_lo"] == at_full["tau_hi"] == 1.0 and np.isnan(at_full["disjoint_tau"])


def test_stability_rows_carry_each_methods_no_op_flag():
  u, r = _planted()
  flags = ["", "no-op (identical runs, unchanged)", "unchecked"]
  out = stability.stability(["near", "mid", "far"], u, r, sizes=[4, 8], repeats=2, flags=flags)
  assert out["flags"] == dict(zip(["near", "mid", "far"], flags))
  assert all(row["flag"] == out["flags"][row["method"]] for row in out["rows"]) and len(out["rows"]) == 6
  read = list(csv.DictReader(io.StringIO(stability.table(out, "csv"))))  # a flag's comma stays in its cell
  assert [row["flag"] for row in read] == flags * 2
  assert [float(row["mean_F"]) for row in read] == [row["mean_F"] for row in out["rows"]]
  cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in stability.table(out).splitlines()]
  assert cells[0][-1] == "flag" and [row[-1] for row in cells[2:]] == flags * 2
  unflagged = stability.stability(["a", "b"], u[:2], r[:2], sizes=[8], repeats=1)  # default: no flags
  assert [row["flag"] for row in unflagged["rows"]] == ["", ""]
  with pytest.raises(ValueError, match="one flag per method: got 1 flags for 3 methods"):
    stability.stability(["near", "mid", "far"], u, r, sizes=[8], repeats=1, flags=[""])


def test_subsample_sizes():
  assert stability.subsample_sizes(100) == [8, 16, 32, 64, 100]
  assert stability.subsample_sizes(64) == [8, 16, 32, 64]
  assert stability.subsample_sizes(6) == [6]
  with pytest.raises(ValueError, match="subsample sizes"):
    stability.subsample_sizes(8, [1, 8])


def test_bad_inputs_raise_one_line_errors(tmp_path):
  with pytest.raises(ValueError, match="no populations file") as err:
    populations.read_populations(str(tmp_path))
  assert "\n" not in str(err.value)
  with pytest.raises(ValueError, match="unknown metric"):
    evaluations.parse_metrics("competition,lira")
  assert evaluations.parse_metrics("klom,ulira") == ("competition", "ulira", "klom")
  with pytest.raises(ValueError, match="fold"):
    evaluations.check_ulira_size(2)
  with pytest.raises(ValueError, match="at least 2 methods"):
    stability.stability(["a"], *_planted(separated=(0,)))


def test_klom_baseline_without_ceiling_models_compares_the_retrained_halves():
  # No stored ceiling: KLOM of the reference's first N/2 models against its other N/2, labelled as such;
  # with the ceiling's models it is those against all N reference models.
  import types
  from unlearn_jax.analysis import evaluators
  from unlearn_jax.metrics.klom import klom, klom_summary
  rng = np.random.default_rng(4)
  n = 20
  retrained = {"forget_confidence": rng.normal(size=(n, 7)), "retain_margin": rng.normal(size=(n, 5)),
               "retain_accuracy": rng.random(n)}
  pops = types.SimpleNamespace(retrained=retrained)
  got = evaluators.klom_baseline(pops, evaluators.Request(metrics=("competition", "klom")))
  assert got["source"] == "retrained halves" and got["num_models"] == n // 2
  for split, name in (("forget", "forget_confidence"), ("retain", "retain_margin")):
    want = klom_summary(klom(retrained[name][:10], retrained[name][10:]))
    assert got[split]["mean"] == pytest.approx(want["mean"], abs=1e-12)
    assert got[split]["p95"] == pytest.approx(want["p95"], abs=1e-12)
  ceiling = {"forget_confidence": rng.normal(size=(n, 7))}
  got = evaluators.klom_baseline(pops, evaluators.Request(metrics=("klom",), ceiling_outputs=ceiling))
  assert got["source"] == "ceiling" and got["num_models"] == n and set(got) == {"forget", "source", "num_models"}
  assert got["forget"]["mean"] == pytest.approx(np.mean(klom(ceiling["forget_confidence"],
                                                             retrained["forget_confidence"])), abs=1e-12)
  assert evaluators.klom_baseline(pops, evaluators.Request(metrics=("competition",))) is None


def test_klom_line_names_which_baseline_it_shows():
  from unlearn_jax.commands import evaluate as evaluate_cmd
  klom_field = {"forget": {"mean": 0.5, "p95": 1.25}}
  halves = {"forget": {"mean": 0.25, "p95": 0.75}, "source": "retrained halves", "num_models": 32}
  line = [x for x in evaluate_cmd.summary_lines({"klom": klom_field, "klom_baseline": halves}) if "KLOM" in x]
  assert line == ["KLOM forget mean 0.5000 p95 1.2500 (retrained halves 0.2500 / 0.7500); retrained halves: 32 "
                  "reference models against the other 32, above the baseline at N"]
  ceiling = dict(halves, source="ceiling", num_models=64)
  line = [x for x in evaluate_cmd.summary_lines({"klom": klom_field, "klom_baseline": ceiling}) if "KLOM" in x]
  assert line == ["KLOM forget mean 0.5000 p95 1.2500 (retrain vs retrain 0.2500 / 0.7500)"]
