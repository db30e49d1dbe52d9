"""``leaderboard`` ranks only results on the same setup together (one table per setup, or ``--strict``)."""

from __future__ import annotations

import pytest

from unlearn_jax import cli
from unlearn_jax.results import report
from unlearn_jax.results import setups


def _results(tmp_path, name, final, n, lr=3e-3):
  d = tmp_path / name
  d.mkdir()
  recipe = {"name": "digits", "epochs": 3, "lr": lr}
  split = {"forget": "random", "fraction": 0.1, "seed": 0}
  res = {"method": name.split("-")[0], "dataset": "digits", "model": "mlp", "num_models": n, "num_models_scored": n,
         "forgetting_quality": final, "final_score": final,
         "setup": setups.make_setup(dataset="digits", data_fingerprint="abc", model="mlp", recipe=recipe, split=split,
                                    dtype="float32", num_models=n),
         "unlearned": {"retain_accuracy": {"mean": 0.9}, "test_accuracy": {"mean": 0.8},
                       "forget_accuracy": {"mean": 0.85}},
         "retrained": {"retain_accuracy": {"mean": 0.95}, "test_accuracy": {"mean": 0.85}},
         "mia": {"unlearned": 0.5}, "cost": {"relative_to_retrain": 0.25}}
  report.write_results(res, str(d))
  return str(d)


@pytest.fixture()
def mixed(tmp_path):
  # The N=8 run has the best score; it must not outrank the N=512 runs.
  return [_results(tmp_path, "finetune-512", 0.05, 512), _results(tmp_path, "none-8", 0.30, 8),
          _results(tmp_path, "retrain-512", 0.18, 512), _results(tmp_path, "seif-8", 0.01, 8)]


def test_rows_are_ranked_within_their_setup(mixed):
  rows = report.leaderboard_rows(mixed)
  assert [(r["method"], r["N"], r["rank"]) for r in rows] == [
      ("retrain", 512, 1), ("finetune", 512, 2), ("none", 8, 1), ("seif", 8, 2)]
  assert rows[0]["setup"] == "digits / mlp / recipe digits / forget random / N=512"
  assert rows[2]["setup"].endswith("N=8")


def test_markdown_prints_one_headed_table_per_setup(mixed, capsys):
  assert cli.main(["leaderboard", *mixed]) == 0
  out = capsys.readouterr().out
  headings = [line for line in out.splitlines() if line.startswith("### setup: ")]
  assert headings == ["### setup: digits / mlp / recipe digits / forget random / N=512",
                      "### setup: digits / mlp / recipe digits / forget random / N=8"]
  second = out.split(headings[1])[1].splitlines()
  assert [line.split("|")[2].strip() for line in second[4:6]] == ["none", "seif"]


def test_csv_names_each_rows_setup(mixed, capsys):
  assert cli.main(["leaderboard", "--format", "csv", *mixed]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].endswith(",setup")
  assert lines[3].startswith("1,none,digits,8,") and lines[3].endswith("N=8")


def test_strict_refuses_mixed_setups_with_one_line(mixed, capsys):
  assert cli.main(["leaderboard", "--strict", *mixed]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("unlearn-jax: error: ") and "num_models (512 vs 8)" in err[0]
  assert cli.main(["leaderboard", "--strict", mixed[0], mixed[2]]) == 0


def test_setups_that_read_alike_are_told_apart(tmp_path):
  dirs = [_results(tmp_path, "a-8", 0.1, 8), _results(tmp_path, "b-8", 0.2, 8, lr=1e-2)]
  rows = report.leaderboard_rows(dirs)
  assert [r["rank"] for r in rows] == [1, 1]
  assert rows[1]["setup"] == rows[0]["setup"] + " (differs in: recipe)"
