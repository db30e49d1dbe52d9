"""``unlearn-jax sweep`` end to end on the real digits data (tiny recipe, N = 2).

One module-scoped sweep of three learning rates of the example method
``examples/kl_finetune.py:make`` (a user's method loaded from its file) with
``--confirm``, the grid given by a YAML config, is shared by the tests; they check that the
retrained population is trained once for all points, that every point equals
a separate ``evaluate`` of the same hyperparameters, that the confirmation uses
a fresh unlearning seed stream against the same reference, that a rerun
reuses finished points, and that bad grids fail before any training.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest

from unlearn_jax import cli, sweep
from unlearn_jax.protocol import runner, stages
from unlearn_jax.unlearning import METHODS
from tests.helpers import load_results

N = 2
LRS = (0.01, 0.03, 0.1)
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "kl_finetune.py")
METHOD = f"{EXAMPLE}:make"
TINY = ["--num-models", str(N), "--chunk-size", str(N), "--epochs", "3", "--set", "recipe_overrides.lr=0.003",
        "--set", "recipe_overrides.min_save_epoch=1", "--hp", "epochs=1", "--hp", "batch_size=256"]


def _cli(args, expect_rc=0):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli.main(args)
  assert rc == expect_rc, err.getvalue()[-3000:]
  return out.getvalue(), err.getvalue()


def _one_line_error(stderr):
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("unlearn-jax: error: "), stderr
  return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  base = tmp_path_factory.mktemp("sweep")
  cache, out = str(base / "cache"), str(base / "out")
  config = base / "sweep.yaml"
  config.write_text(f"method: {json.dumps(METHOD)}\nplots: false\ngrid:\n  lr: [0.01, 0.03, 0.1]\nconfirm: true\n")
  calls = {"original": 0, "retrained": 0, "run_chunked": []}
  real_original, real_retrained, real_chunked = (stages.original_model, stages.retrained_models,
                                                 runner.run_chunks)

  def original(*a, **k):
    calls["original"] += 1
    return real_original(*a, **k)

  def retrained(*a, **k):
    calls["retrained"] += 1
    return real_retrained(*a, **k)

  def chunked(stage, *a, **k):
    calls["run_chunked"].append(stage)
    return real_chunked(stage, *a, **k)

  mp = pytest.MonkeyPatch()
  mp.setattr(stages, "original_model", original)
  mp.setattr(stages, "retrained_models", retrained)
  mp.setattr(runner, "run_chunks", chunked)
  try:
    stdout, stderr = _cli(["sweep", "--config", str(config), *TINY, "--cache-dir", cache, "--output-dir", out])
  finally:
    mp.undo()
  with open(os.path.join(out, "sweep.json")) as f:
    summary = json.load(f)
  return dict(cache=cache, out=out, config=str(config), stdout=stdout, stderr=stderr, calls=calls, summary=summary)


def test_three_points_share_one_retrained_population(run):
  calls = run["calls"]
  assert calls["original"] == 1 and calls["retrained"] == 1
  # one retrained stage, then one unlearning stage per point and one for the confirmation
  assert calls["run_chunked"] == ["retrained"] + ["unlearn"] * 4
  retrained_dirs = [d for d in os.listdir(run["cache"]) if d.startswith("retrained-")]
  assert len(retrained_dirs) == 1
  chunks = [f for f in os.listdir(os.path.join(run["cache"], retrained_dirs[0])) if f.startswith("chunk-")]
  assert len(chunks) == 1  # N = chunk size: one chunk, written once
  points = sorted(row["point"] for row in run["summary"]["rows"])
  assert points == sorted(f"lr_{lr}" for lr in LRS)
  for p in points:
    r = load_results(os.path.join(run["out"], p))
    assert r["cache"]["retrained"] == os.path.join(run["cache"], retrained_dirs[0])
    assert r["num_models_scored"] == N and r["hyperparameters"]["epochs"] == 1
    assert r["method"] == "kl_finetune" and r["method_origin"]["source"] == EXAMPLE


def test_table_is_ranked_by_final_score(run):
  rows = run["summary"]["rows"]
  scores = [row["final_score"] for row in rows]
  assert scores == sorted(scores, reverse=True) and [row["rank"] for row in rows] == [1, 2, 3]
  for row in rows:
    r = load_results(os.path.join(run["out"], row["point"]))
    assert row["final_score"] == r["final_score"] and row["values"] == {"lr": r["hyperparameters"]["lr"]}
  with open(os.path.join(run["out"], "sweep.csv")) as f:
    lines = f.read().splitlines()
  assert lines[0].startswith("rank,point,lr,final_score,forgetting_quality,confirm_final_score")
  assert lines[1].startswith(f"1,{rows[0]['point']},{rows[0]['values']['lr']},")
  with open(os.path.join(run["out"], "sweep.md")) as f:
    md = f.read()
  assert md.startswith("## sweep of kl_finetune:make: digits / mlp / recipe digits (lr=0.003, epochs=3, "
                       "min_save_epoch=1, retrain_min_save_epoch=2) / forget random / N=2")
  assert f"best point: {rows[0]['point']}" in md and "confirmation on a fresh unlearning seed stream" in md
  assert md in run["stdout"]


def test_a_point_equals_a_separate_evaluate(run, tmp_path):
  point = run["summary"]["rows"][1]
  _cli(["evaluate", *TINY, "--method", METHOD, "--set", "plots=false", "--hp", f"lr={point['values']['lr']}",
        "--cache-dir", run["cache"], "--output-dir", str(tmp_path / "eval")])
  alone = load_results(tmp_path / "eval")
  swept = load_results(os.path.join(run["out"], point["point"]))
  for key in ("final_score", "forgetting_quality", "per_example_epsilons", "unlearned", "retrained",
              "hyperparameters", "setup", "method_origin"):
    assert alone[key] == swept[key], key


def test_confirm_redraws_the_unlearned_models_only(run):
  confirm, best = run["summary"]["confirm"], run["summary"]["rows"][0]
  assert confirm["point"] == best["point"] and confirm["unlearn_seed"] == 1 and not confirm["retrained_redrawn"]
  c = load_results(confirm["dir"])
  b = load_results(os.path.join(run["out"], best["point"]))
  assert c["seed"] == b["seed"] == 0 and b["unlearn_seed"] == 0 and c["unlearn_seed"] == 1
  assert c["hyperparameters"] == b["hyperparameters"]
  assert c["retrained"] == b["retrained"] and c["original"] == b["original"]  # the same reference
  assert c["cache"]["unlearned"] != b["cache"]["unlearned"]
  cu, bu = c["unlearned"]["test_accuracy"]["per_model"], b["unlearned"]["test_accuracy"]["per_model"]
  assert not np.array_equal(c["per_example_epsilons"], b["per_example_epsilons"]) or cu != bu
  assert confirm["final_score"] == c["final_score"] and best["confirm_final_score"] == c["final_score"]


def test_confirm_seed_must_differ_from_the_sweep_seed(run, tmp_path):
  _, err = _cli(["sweep", "--config", run["config"], *TINY, "--confirm-seed", "0", "--cache-dir", run["cache"],
                 "--output-dir", str(tmp_path / "o")], expect_rc=2)
  assert "--confirm-seed must differ" in _one_line_error(err)


def test_rerun_reuses_finished_points(run):
  # the same points given by flags instead of the config: nothing is unlearned again
  _, stderr = _cli(["sweep", "--method", METHOD, "--set", "plots=false", *TINY, "--grid", "lr=0.01,0.03,0.1",
                    "--confirm", "--cache-dir", run["cache"], "--output-dir", run["out"]])
  assert stderr.count("finished earlier, results reused") == 4
  assert "[unlearn] models" not in stderr and "[retrained] models" not in stderr.replace("models from cache", "")
  with open(os.path.join(run["out"], "sweep.json")) as f:
    again = json.load(f)
  assert [r["final_score"] for r in again["rows"]] == [r["final_score"] for r in run["summary"]["rows"]]
  assert all(r["reused"] for r in again["rows"])


@pytest.mark.parametrize("args, message", [
    (["--grid", "nope=1,2"], "method 'finetune' has no hyperparameter 'nope'; valid keys: preset, lr"),
    ([], "the sweep grid is empty"),
    (["--grid", "lr="], "grid key 'lr' has no values"),
    (["--grid", "lr=0.1,abc"], "hyperparameter 'lr' must be"),
    (["--grid", "lr=-1"], "hyperparameter 'lr' must be"),
    (["--grid", "lr=0.1,0.1"], "grid key 'lr' lists the value 0.1 twice"),
    (["--grid", "lr"], "--grid expects NAME=V1,V2,..."),
    (["--grid", "preset=kit,nope"], "hyperparameter 'preset' must be one of"),
    (["--method", "nope", "--grid", "lr=1"], "unknown method 'nope'"),
    (["--method", "/nonexistent/my_method.py:make", "--grid", "lr=1"], "no such file '/nonexistent/my_method.py'"),
])
def test_bad_grid_is_one_line_error_before_training(tmp_path, args, message):
  cache, out = tmp_path / "cache", tmp_path / "out"
  _, err = _cli(["sweep", "--config", "tiny", "--method", "finetune", *args, "--cache-dir", str(cache),
                 "--output-dir", str(out)], expect_rc=2)
  assert message in _one_line_error(err)
  assert not cache.exists() and not out.exists()


def test_evaluate_refuses_a_config_with_a_grid(run, tmp_path):
  _, err = _cli(["evaluate", "--config", run["config"], "--output-dir", str(tmp_path / "o")], expect_rc=2)
  assert "the config has a sweep grid; run it with 'unlearn-jax sweep'" in _one_line_error(err)


def test_grid_values_keep_bracketed_lists_and_config_forms():
  assert sweep.split_values("[1,2],[3, 4], 5") == ["[1,2]", "[3, 4]", "5"]
  assert sweep.grid_from_config({"lr": "0.1,0.2", "epochs": [1, 3], "bn_train": True}) == {
      "lr": ["0.1", "0.2"], "epochs": [1, 3], "bn_train": [True]}
  points = sweep.check_grid("finetune", METHODS["finetune"], {"lr": ["1e-4", "3e-4"], "epochs": [1, 3]})
  assert [p.values for p in points] == [(("lr", 1e-4), ("epochs", 1)), (("lr", 1e-4), ("epochs", 3)),
                                        (("lr", 3e-4), ("epochs", 1)), (("lr", 3e-4), ("epochs", 3))]
  assert [p.name for p in points] == ["lr_0.0001-epochs_1", "lr_0.0001-epochs_3", "lr_0.0003-epochs_1",
                                      "lr_0.0003-epochs_3"]


def test_plot_has_one_column_per_swept_hyperparameter(tmp_path):
  rows = []
  for lr in (0.01, 0.1):
    for preset in ("kit", "kaggle"):
      rows.append({"point": f"{lr}-{preset}", "values": {"lr": lr, "preset": preset}, "final_score": lr,
                   "forgetting_quality": lr, "retain_acc_U": 0.9, "test_acc_U": 0.8})
  result = sweep.SweepResult("finetune", rows, {"lr": [0.01, 0.1], "preset": ["kit", "kaggle"]}, rows[0], None,
                             {"setup": "digits / mlp", "retain_acc_R": 0.95, "test_acc_R": 0.9, "seed": 0}, {})
  path = sweep.write_plot(result, str(tmp_path / "sweep.png"))
  import matplotlib.image
  image = matplotlib.image.imread(path)
  assert image.shape[1] == 900 and image.shape[0] == 650  # 2 columns x 4.5 in, 6.5 in at 100 dpi
  assert os.listdir(tmp_path) == ["sweep.png"]
