"""Tables that say what they show: no-op flags wherever F is tabled, the leaderboard's differing
hyperparameters, sweep folders inside ``leaderboard runs/*``, recipes named by their changes."""

from __future__ import annotations

import csv
import dataclasses
import io
import os

from tests.helpers import run_cli
from unlearn_jax import sweep
from unlearn_jax.protocol.config import resolve_recipe
from unlearn_jax.results import report, setups
from unlearn_jax.results.record import jsonable


def _results(d, method, final, hp, flagged=False, diagnostics=None):
  os.makedirs(d, exist_ok=True)
  recipe = {"name": "digits", "epochs": 3, "lr": 3e-3}
  split = {"forget": "random", "fraction": 0.1, "seed": 0}
  res = {"method": method, "dataset": "digits", "model": "mlp", "num_models": 8, "num_models_scored": 8,
         "forgetting_quality": final, "final_score": final, "hyperparameters": hp,
         "setup": setups.make_setup(dataset="digits", data_fingerprint="abc", model="mlp", recipe=recipe, split=split,
                                    dtype="float32", num_models=8),
         "unlearned": {"retain_accuracy": {"mean": 0.9}, "test_accuracy": {"mean": 0.8},
                       "forget_accuracy": {"mean": 0.85}},
         "retrained": {"retain_accuracy": {"mean": 0.95}, "test_accuracy": {"mean": 0.85}},
         "mia": {"unlearned": 0.5}, "cost": {"relative_to_retrain": 0.25},
         "degenerate": {"flagged": flagged, "reasons": ["identical runs"] if flagged else []}}
  if diagnostics is not None:
    res["diagnostics"] = diagnostics
  report.write_results(res, str(d))
  return str(d)


def test_leaderboard_shows_the_hyperparameters_that_differ(tmp_path):
  runs = [_results(tmp_path / f"ssd-{a}", "ssd", 0.01 * a, {"alpha": a, "lam": 10, "mode": "x"}) for a in (1, 2, 3)]
  runs.append(_results(tmp_path / "ssd-lam", "ssd", 0.001, {"alpha": 1, "lam": 0.5, "mode": "x"}))
  rows = report.leaderboard_rows(runs)
  assert [r["hyperparameters"] for r in rows] == ["alpha=3 lam=10", "alpha=2 lam=10", "alpha=1 lam=10",
                                                  "alpha=1 lam=0.5"]  # mode is the same everywhere: not shown
  out, _ = run_cli(["leaderboard", "--format", "csv", *runs])
  table = list(csv.DictReader(io.StringIO(out)))
  assert [r["hyperparameters"] for r in table] == ["alpha=3 lam=10", "alpha=2 lam=10", "alpha=1 lam=10",
                                                   "alpha=1 lam=0.5"]
  same = report.leaderboard_rows(runs[:1] + [_results(tmp_path / "twin", "ssd", 0.5, {"alpha": 1, "lam": 10,
                                                                                       "mode": "x"})])
  assert [r["hyperparameters"] for r in same] == ["", ""]
  other = report.leaderboard_rows(runs[:2] + [_results(tmp_path / "ft", "finetune", 0.5, {"lr": 0.1, "epochs": 1})])
  assert [(r["method"], r["hyperparameters"]) for r in other] == [  # compared within a method only
      ("finetune", ""), ("ssd", "alpha=2"), ("ssd", "alpha=1")]


def test_leaderboard_descends_into_sweep_folders(tmp_path):
  runs = tmp_path / "runs"
  _results(runs / "finetune", "finetune", 0.02, {"lr": 0.1})
  _results(runs / "kl-sweep" / "lr_0.01", "kl", 0.05, {"lr": 0.01})
  _results(runs / "kl-sweep" / "lr_0.1", "kl", 0.01, {"lr": 0.1}, flagged=True)
  (runs / "kl-sweep" / "sweep.json").write_text("{}")
  paths = sorted(str(p) for p in runs.iterdir())  # what the shell makes of runs/*
  out, _ = run_cli(["leaderboard", "--format", "csv", *paths])
  table = list(csv.DictReader(io.StringIO(out)))
  assert [(r["method"], os.path.relpath(r["dir"], runs)) for r in table] == [
      ("kl", os.path.join("kl-sweep", "lr_0.01")), ("finetune", "finetune"), ("kl", os.path.join("kl-sweep", "lr_0.1"))]
  assert [r["flag"] for r in table] == ["", "", "no-op (identical runs)"]
  _, err = run_cli(["leaderboard", str(tmp_path / "empty-folder-that-does-not-exist")], expect_rc=2)
  assert len(err.strip().splitlines()) == 1


def test_sweep_tables_carry_the_flag_and_the_diagnostics(tmp_path):
  diag = {"dampened": {"shape": [], "of": "value", "mean": 0.25, "sd": 0.01, "min": 0.2, "max": 0.3,
                       "num_seeds": 8, "nonfinite": 0},
          "loss": {"shape": [3], "of": "last entry", "mean": 1.5, "sd": 0.1, "min": 1.4, "max": 1.6,
                   "num_seeds": 8, "nonfinite": 0}}
  points = [sweep.Point("a_1", (("a", 1),)), sweep.Point("a_2", (("a", 2),))]
  results = [report.read_results(_results(tmp_path / p.name, "ssd", f, {"a": v}, flagged=flag, diagnostics=diag))
             for p, f, v, flag in zip(points, (0.0078, 0.002), (1, 2), (True, False))]
  rows = [sweep._row(p, r, False) for p, r in zip(points, results)]
  sweep.rank_rows(rows)
  result = sweep.SweepResult("ssd", rows, {"a": [1, 2]}, rows[0], None,
                             {"setup": "s", "retain_acc_R": 0.95, "test_acc_R": 0.85, "seed": 0}, {})
  cols = sweep.table_columns(result)
  assert cols.index("flag") > cols.index("forgetting_quality")
  assert cols[-2:] == ["diag:dampened", "diag:loss[-1]"]
  table = list(csv.DictReader(io.StringIO(sweep.sweep_csv(result))))
  assert [(r["point"], r["flag"]) for r in table] == [("a_1", "no-op (identical runs)"), ("a_2", "")]
  assert [float(r["diag:dampened"]) for r in table] == [0.25, 0.25]
  assert [float(r["diag:loss[-1]"]) for r in table] == [1.5, 1.5]
  md = sweep.sweep_markdown(result)
  assert "| no-op (identical runs) |" in md and "flagged no-op (identical runs)" in md


def test_a_modified_recipe_is_named_by_its_changes():
  full = {"name": "digits", **jsonable(dataclasses.asdict(resolve_recipe("digits")))}
  tiny = {"name": "digits", **jsonable(dataclasses.asdict(
      resolve_recipe("digits", (("epochs", 3), ("lr", 3e-3)))))}
  base = {"dataset": "digits", "model": "mlp", "split": {"forget": "random"}, "num_models": 8}
  assert setups.describe(dict(base, recipe=full)) == "digits / mlp / recipe digits / forget random / N=8"
  text = setups.describe(dict(base, recipe=tiny))
  assert text.startswith("digits / mlp / recipe digits (") and "epochs=3" in text and "lr=0.003" in text
  assert setups.describe(dict(base, recipe={"name": "digits", "epochs": 3})) == \
      "digits / mlp / recipe digits / forget random / N=8"  # a partial (older) record: nothing to compare
