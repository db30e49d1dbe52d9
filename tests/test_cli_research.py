"""``evaluate --bootstrap/--with-ceiling/--metrics``, ``compare``, ``stability`` end to end (tiny config, N = 4).

One module-scoped cache: ``finetune`` with every option (it computes the ceiling: 4 more
retrained models through the unlearning stage), then ``none`` with KLOM only (it must find
the ceiling and the retrained margins in the cache).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import jax
import numpy as np
import pytest

from tests.helpers import load_results, run_cli
from unlearn_jax import checkpoint, cli
from unlearn_jax.protocol.config import from_dict
from unlearn_jax.protocol.context import build_context
from unlearn_jax.results import populations, report
from unlearn_jax.commands import evaluate as evaluate_cmd
from unlearn_jax.metrics import forgetting_quality, logit_scaled_confidence
from unlearn_jax.training import make_predict_fn

N = 4
MARGINS = 16


_cli = run_cli


def _one_line_error(stderr):
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("unlearn-jax: error: "), stderr
  return lines[0]


COMMON = ["evaluate", "--config", "tiny", "--epochs", "1", "--num-models", str(N), "--margin-examples", str(MARGINS),
          "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("research")
  cache = str(base / "cache")
  ft, none = str(base / "finetune"), str(base / "none")
  _cli(COMMON + ["--method", "finetune", "--cache-dir", cache, "--output-dir", ft, "--bootstrap", "20",
                 "--with-ceiling", "--metrics", "competition,ulira,klom"])
  _cli(COMMON + ["--method", "none", "--cache-dir", cache, "--output-dir", none, "--metrics", "klom"])
  return dict(base=base, cache=cache, finetune=ft, none=none, r_finetune=load_results(ft), r_none=load_results(none))


def test_metrics_and_bootstrap_fields(runs):
  r = runs["r_finetune"]
  assert r["metrics"] == ["competition", "ulira", "klom"]
  assert r["margin_examples"] == {"retain": MARGINS, "heldout": MARGINS}
  assert set(r["ulira"]) >= {"pair_balanced_accuracy", "pair_auc", "model_auc", "pair_tpr_at_1pct_fpr"}
  assert all(0.0 <= r["ulira"][k] <= 1.0 for k in r["ulira"] if k != "folds")
  assert {k: v["num_examples"] for k, v in r["klom"].items()} == {"forget": 144, "retain": MARGINS,
                                                                  "heldout": MARGINS}
  assert all(v["mean"] >= 0 and v["p95"] >= 0 for v in r["klom"].values())
  b = r["bootstrap"]
  assert b["num_draws"] == 20
  assert b["forgetting_quality"]["point"] == pytest.approx(r["forgetting_quality"])
  assert b["final_score"]["point"] == pytest.approx(r["final_score"])
  for name in ("forgetting_quality", "final_score", "example_forgetting_quality"):
    assert b[name]["lo"] <= b[name]["hi"]
  assert "ulira" not in runs["r_none"] and "bootstrap" not in runs["r_none"]
  assert set(runs["r_none"]["klom"]) == {"forget", "retain", "heldout"}


def test_populations_file_matches_results(runs):
  for name in ("finetune", "none"):
    r, pops = runs[f"r_{name}"], populations.read_populations(runs[name])
    assert pops["unlearned/forget_confidence"].shape == pops["retrained/forget_confidence"].shape == (N, 144)
    for kind in ("unlearned", "retrained"):
      for acc in ("retain_accuracy", "test_accuracy", "forget_accuracy"):
        np.testing.assert_allclose(pops[f"{kind}/{acc}"], r[kind][acc]["per_model"], rtol=1e-6)
      assert pops[f"{kind}/retain_margin"].shape == pops[f"{kind}/heldout_margin"].shape == (N, MARGINS)
    np.testing.assert_array_equal(pops["epsilons"], r["per_example_epsilons"])
    assert pops["points"].mean() == pytest.approx(r["forgetting_quality"])
    assert forgetting_quality(pops["unlearned/forget_confidence"], pops["retrained/forget_confidence"]) == \
        pytest.approx(r["forgetting_quality"])
  a, b = populations.read_populations(runs["finetune"]), populations.read_populations(runs["none"])
  for key in ("retrained/forget_confidence", "retrained/retain_margin", "retrained/heldout_margin"):
    np.testing.assert_array_equal(a[key], b[key])  # one retrained population, one fixed margin subset


def test_retrained_margins_equal_a_recomputation_from_cached_parameters(runs):
  r = runs["r_finetune"]
  args = cli.build_parser().parse_args(COMMON + ["--method", "finetune", "--cache-dir", runs["cache"]])
  ctx = build_context(from_dict(evaluate_cmd.resolve_config(args)))
  from unlearn_jax.protocol import margins
  subsets = margins.subset_indices(ctx.data, 0, MARGINS)
  chunk = [f for f in os.listdir(r["cache"]["retrained"]) if f.startswith("chunk-")]
  arrays, _ = checkpoint.load_arrays(os.path.join(r["cache"]["retrained"], sorted(chunk)[0]))
  params = checkpoint.unflatten_tree(arrays, "params/")
  predict = make_predict_fn(ctx.model)
  first = jax.tree.map(lambda a: a[0], params)
  idx = subsets["heldout"]
  want = logit_scaled_confidence(predict(first, {}, ctx.data, idx), ctx.data.labels[idx])
  got = populations.read_populations(runs["finetune"])["retrained/heldout_margin"][0]
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_ceiling_is_retrain_as_the_method_and_reaches_the_leaderboard(runs):
  r = runs["r_finetune"]
  path = os.path.join(r["cache"]["retrained"], f"ceiling-n{N}.json")
  with open(path) as f:
    stored = json.load(f)
  # reference: F of the ceiling run's stored unlearned confidences against the retrained ones
  chunks = stored["unlearned_chunks"]
  files = sorted(f for f in os.listdir(chunks) if f.startswith("chunk-"))
  conf = np.concatenate([checkpoint.load_arrays(os.path.join(chunks, f))[0]["out/forget_confidence"] for f in files])
  retrained = populations.read_populations(runs["finetune"])["retrained/forget_confidence"]
  assert stored["forgetting_quality"] == pytest.approx(forgetting_quality(conf, retrained))
  assert r["ceiling"]["forgetting_quality"] == stored["forgetting_quality"] > 0
  assert r["ceiling"]["ratio"] == pytest.approx(r["forgetting_quality"] / stored["forgetting_quality"])
  assert runs["r_none"]["ceiling"]["forgetting_quality"] == stored["forgetting_quality"]  # found in the cache
  # --bootstrap: the ceiling's own interval around its point; klom: the retrain-vs-retrain baseline of the
  # ceiling's models (forget split: the ceiling run measures no margins), in both runs
  interval = r["ceiling"]["interval"]
  assert interval["point"] == pytest.approx(stored["forgetting_quality"], abs=1e-12)
  assert interval["lo"] <= interval["point"] <= interval["hi"] and "interval" not in runs["r_none"]["ceiling"]
  from unlearn_jax.metrics.klom import klom
  for run in (r, runs["r_none"]):
    assert run["klom_baseline"]["forget"]["mean"] == pytest.approx(float(np.mean(klom(conf, retrained))), abs=1e-12)
  out, _ = _cli(["leaderboard", runs["finetune"], runs["none"], "--format", "csv"])
  rows = {line.split(",")[1]: line for line in out.splitlines()[1:]}
  b = r["bootstrap"]["forgetting_quality"]
  assert f"[{b['lo']:.4f}, {b['hi']:.4f}]" in rows["finetune"] and str(r["ceiling"]["ratio"]) in rows["finetune"]


def test_compare_with_itself_and_another_method(runs):
  out, _ = _cli(["compare", runs["finetune"], runs["finetune"], "--permutations", "19"])
  assert "verdict: not distinguishable at this N" in out and "p = 1\n" in out
  out, _ = _cli(["compare", runs["finetune"], runs["none"], "--permutations", "19", "--output",
                 str(runs["base"] / "cmp.json")])
  with open(runs["base"] / "cmp.json") as f:
    cmp = json.load(f)
  pts = lambda d: populations.read_populations(d)["points"]
  assert cmp["mean_difference"] == pytest.approx(np.mean(pts(runs["finetune"]) - pts(runs["none"])))
  assert cmp["test"] == "permutation" and cmp["models"]["permutations"] == 19
  assert cmp["models"]["mean_difference"] == pytest.approx(cmp["mean_difference"])  # the test's F at all N models
  assert f"verdict: {cmp['verdict']}" in out and f"p = {cmp['models']['p_value']:.3g}" in out
  assert "permutation test over the 8 pooled unlearned models (19 random splits" in out
  # --test groups: the t test over disjoint model groups decides; --permutations is refused with it
  out, _ = _cli(["compare", runs["finetune"], runs["none"], "--test", "groups", "--output",
                 str(runs["base"] / "cmp_groups.json")])
  with open(runs["base"] / "cmp_groups.json") as f:
    grouped = json.load(f)
  assert grouped["test"] == "groups" and grouped["verdict"] == grouped["groups"]["verdict"]
  assert grouped["groups"] == cmp["groups"]  # the same seed: the same groups and interval beside either test
  assert f"verdict: {grouped['verdict']}" in out and "permutation test" not in out
  line = _one_line_error(_cli(["compare", runs["finetune"], runs["none"], "--test", "groups", "--permutations", "19"],
                              expect_rc=2)[1])
  assert "--permutations applies to --test permutation only" in line
  line = _one_line_error(_cli(["compare", runs["finetune"], runs["none"], "--permutations", "10"], expect_rc=2)[1])
  assert "--permutations 10 cannot give p <= 0.05" in line


def test_stability_from_stored_populations(runs):
  png = runs["base"] / "stability.png"
  out, _ = _cli(["stability", runs["finetune"], runs["none"], "--repeats", "2", "--sizes", "2,4", "--plot", str(png),
                 "--format", "csv"])
  lines = [line for line in out.splitlines() if line[:1].isdigit()]
  assert len(lines) == 4
  header = next(line for line in out.splitlines() if line.startswith("n,method,")).split(",")
  at = header.index("mean_F")
  full = {line.split(",")[1]: float(line.split(",")[at]) for line in lines if line.startswith("4,")}
  assert full == {"finetune": pytest.approx(runs["r_finetune"]["forgetting_quality"]),
                  "none": pytest.approx(runs["r_none"]["forgetting_quality"])}
  # each row carries its method's no-op flag, as the leaderboard shows it
  table = list(csv.DictReader(io.StringIO("\n".join(line for line in out.splitlines()
                                                     if line.startswith("n,method,") or line[:1].isdigit()))))
  flags = {row["method"]: row["flag"] for row in table}
  assert len(table) == 4 and flags == {m: report.degenerate_flag(runs[f"r_{m}"]["degenerate"]) for m in flags}
  assert flags["none"].startswith("no-op (") and flags["finetune"] == ""
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_one_line_errors(runs, tmp_path):
  # a different setup: the same result with another split seed
  other = tmp_path / "other"
  shutil.copytree(runs["none"], other, ignore=shutil.ignore_patterns("chunks"))
  r = load_results(other)
  r["setup"]["split"]["seed"] = 7
  (other / "results.json").write_text(json.dumps(r))
  line = _one_line_error(_cli(["compare", runs["finetune"], str(other)], expect_rc=2)[1])
  assert "different setup" in line and "split" in line
  _one_line_error(_cli(["stability", runs["finetune"], str(other)], expect_rc=2)[1])
  # no populations file
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(os.path.join(runs["none"], "results.json"), bare / "results.json")
  line = _one_line_error(_cli(["stability", runs["finetune"], str(bare), "--plot", ""], expect_rc=2)[1])
  assert "no populations file" in line
  # too few models for U-LiRA's folds: refused before anything trains
  out_dir = tmp_path / "ulira3"
  line = _one_line_error(_cli(["evaluate", "--config", "tiny", "--num-models", "3", "--metrics", "ulira",
                               "--cache-dir", str(tmp_path / "c"), "--output-dir", str(out_dir)], expect_rc=2)[1])
  assert "fold" in line and not os.path.exists(out_dir)
  _one_line_error(_cli(["evaluate", "--config", "tiny", "--bootstrap", "1", "--output-dir", str(out_dir)],
                       expect_rc=2)[1])
  _one_line_error(_cli(["evaluate", "--config", "tiny", "--metrics", "competition,lira", "--output-dir",
                        str(out_dir)], expect_rc=2)[1])
