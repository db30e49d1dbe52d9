"""Hostile settings and hand-edited results, each through ``cli.main``: exit code 2, one line, no traceback,
and no work done (nothing trained, nothing written) before the refusal.

1. ``results.json`` / ``populations.npz`` edited by hand: checked and cross-checked on reading;
   text fields escaped before they reach the terminal or a markdown table.
2. Settings checked before work: recipe numbers, epochs, booleans, klom without cached
   parameters (and ``cache_params`` in the retrained key), unknown datasets.
3. Upper bounds: integer hyperparameters, ``--bootstrap``, ``compare --draws``, ``stability --repeats``.
4. The time budget (``--max-hours``): the estimate after the first chunk, the refusal, what remains.
5. A config file that exits or interrupts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from unlearn_jax import checkpoint, cli
from unlearn_jax.protocol import budget, settings
from unlearn_jax.protocol.config import EvalConfig
from unlearn_jax.protocol.context import build_context
from unlearn_jax.results import populations, report, setups, untrusted
from unlearn_jax.metrics import epsilon_points, forgetting_metric

N, E = 8, 12


def _cli_error(capsys, argv) -> str:
  code = cli.main(argv)
  captured = capsys.readouterr()
  assert code == 2, captured.err
  err = captured.err
  assert err.startswith("unlearn-jax: error: ") and err.count("\n") == 1, err
  assert "Traceback" not in err + captured.out
  return err


# ---------------------------------------------------------------------------
# 1. Hand-edited results and populations.


def _write_run(directory, method: str, shift: float, seed: int) -> dict:
  """A real result: random confidences of N models on E examples, scored by the metric, written as evaluate does."""
  rng = np.random.default_rng(seed)
  u = rng.normal(shift, 1.0, (N, E))
  r = rng.normal(0.0, 1.0, (N, E))
  res = forgetting_metric(u, r)
  acc = lambda: rng.uniform(0.8, 1.0, N)
  arrays = {"unlearned/forget_confidence": u.astype(np.float32), "retrained/forget_confidence": r.astype(np.float32)}
  for kind in populations.KINDS:
    for name in populations.PER_MODEL:
      arrays[f"{kind}/{name}"] = acc().astype(np.float32)
  arrays["epsilons"] = np.asarray(res.epsilons, np.float64)
  arrays["points"] = epsilon_points(arrays["epsilons"], N)
  summary = lambda kind: {n: {"mean": float(arrays[f"{kind}/{n}"].mean()),
                              "per_model": arrays[f"{kind}/{n}"].astype(np.float64).tolist()}
                          for n in populations.PER_MODEL}
  results = {"method": method, "dataset": "digits", "model": "mlp", "num_models": N, "num_models_scored": N,
             "forgetting_quality": float(res.forgetting_quality), "final_score": float(res.forgetting_quality) * 0.9,
             "per_example_epsilons": arrays["epsilons"].tolist(),
             "setup": setups.make_setup(dataset="digits", data_fingerprint="f00d", model="mlp",
                                        recipe={"name": "digits"}, split={"forget": "random", "seed": 0},
                                        dtype="float32", num_models=N),
             "unlearned": summary("unlearned"), "retrained": summary("retrained"),
             "mia": {"unlearned": 0.5}, "cost": {"relative_to_retrain": 0.25}}
  os.makedirs(directory, exist_ok=True)
  report.write_results(results, str(directory))
  checkpoint.save_arrays(os.path.join(directory, populations.POPULATIONS_FILE), arrays, {"method": method})
  return results


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  base = tmp_path_factory.mktemp("runs")
  a, b = base / "a", base / "b"
  return dict(a=str(a), b=str(b), ra=_write_run(a, "finetune", 0.3, 0), rb=_write_run(b, "none", 2.0, 1))


def test_untouched_results_pass_every_command(pair, capsys):
  for argv in (["compare", pair["a"], pair["b"], "--draws", "200"], ["leaderboard", pair["a"], pair["b"]],
               ["stability", pair["a"], pair["b"], "--repeats", "2", "--plot", ""]):
    assert cli.main(argv) == 0, capsys.readouterr().err
  capsys.readouterr()


def _edited(tmp_path, pair, edit) -> str:
  """A copy of run A whose results.json is changed by ``edit(dict) -> dict or text``."""
  d = tmp_path / "edited"
  d.mkdir()
  data = edit(copy.deepcopy(pair["ra"]))
  text = data if isinstance(data, str) else json.dumps(data)
  (d / "results.json").write_text(text)
  shutil.copy(os.path.join(pair["a"], populations.POPULATIONS_FILE), d / populations.POPULATIONS_FILE)
  return str(d)


def _set(path, value):
  def edit(r):
    node = r
    for key in path[:-1]:
      node = node[key]
    node[path[-1]] = value
    return r
  return edit


def _huge_number_text(field: str, digits: int):
  def edit(r):
    r[field] = 12345.0
    return json.dumps(r).replace("12345.0", "1" + "0" * digits)
  return edit


def _eps_entry(value):
  def edit(r):
    r["per_example_epsilons"][3] = value
    return r
  return edit


MALFORMED = [
    ("root null", lambda r: "null", "must hold a JSON object, got NoneType"),
    ("F null with epsilons", _set(["forgetting_quality"], None), "forgetting_quality is null although"),
    ("F a dict", _set(["forgetting_quality"], {"v": 1}), "field 'forgetting_quality' must be a number"),
    ("F a string", _set(["forgetting_quality"], "0.1"), "field 'forgetting_quality' must be a number"),
    ("F above 1", _set(["forgetting_quality"], 1.5), "field 'forgetting_quality' must lie in [0, 1]"),
    ("final score 10**400", _huge_number_text("final_score", 400), "field 'final_score' must be a number"),
    ("final score over the int digit limit", _huge_number_text("final_score", 5000), "cannot read results file"),
    ("final score negative", _set(["final_score"], -1.0), "field 'final_score' must lie in [0, inf]"),
    ("method null", _set(["method"], None), "field 'method' must be a string"),
    ("N zero", _set(["num_models_scored"], 0), "field 'num_models_scored' must be an integer in [2,"),
    ("N a string", _set(["num_models_scored"], "8"), "field 'num_models_scored' must be an integer in [2,"),
    ("N a boolean", _set(["num_models_scored"], True), "field 'num_models_scored' must be an integer in [2,"),
    ("N above num_models", _set(["num_models_scored"], N + 1), "exceeds num_models"),
    ("negative epsilon", _eps_entry(-1.0), "per_example_epsilons must lie in [0, 50]"),
    ("epsilon above the cap", _eps_entry(60.0), "per_example_epsilons must lie in [0, 50]"),
    ("epsilon null", _eps_entry(None), "per_example_epsilons must hold numbers only, got None"),
    ("epsilon a string", _eps_entry("0"), "per_example_epsilons must hold numbers only, got '0'"),
    ("epsilons a dict", _set(["per_example_epsilons"], {"0": 1}), "per_example_epsilons must be a non-empty list"),
    ("epsilons edited, F kept", _set(["per_example_epsilons"], [0.0] * E), "disagrees with its per_example_epsilons"),
    ("per-model list too short", _set(["unlearned", "retain_accuracy", "per_model"], [0.9]),
     "unlearned.retain_accuracy.per_model must be a list of 8 numbers"),
    ("accuracy above 1", _set(["unlearned", "test_accuracy", "mean"], 1.5),
     "field unlearned.test_accuracy.mean must lie in [0, 1]"),
    ("MIA 10**400", _set(["mia", "unlearned"], 10**400), "field mia.unlearned must be a number"),
    ("cost a list", _set(["cost", "relative_to_retrain"], [1]), "field cost.relative_to_retrain must be a number"),
    ("degenerate reasons a number", _set(["degenerate"], {"flagged": True, "reasons": 5}),
     "field 'degenerate' must be an object with a list of 'reasons'"),
]


@pytest.mark.parametrize("name, edit, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_results_are_one_line_errors_in_every_command(tmp_path, capsys, pair, name, edit, message):
  bad = _edited(tmp_path, pair, edit)
  for argv in (["compare", bad, pair["b"]], ["leaderboard", pair["b"], bad],
               ["stability", pair["b"], bad, "--plot", ""]):
    err = _cli_error(capsys, argv)
    assert message in err and "edited" in err, (argv[0], err)


def test_negative_epsilons_are_not_scored_as_four_points():
  # the case: eps = -1 would be bucket -2, i.e. 2**2 = 4 points per example
  assert epsilon_points(np.array([-1.0]), N)[0] == 4.0
  with pytest.raises(ValueError, match="must lie in"):
    untrusted.epsilons_of([-1.0], "x", "per_example_epsilons")


def _edit_populations(tmp_path, pair, change) -> str:
  d = tmp_path / "pops"
  d.mkdir()
  (d / "results.json").write_text(json.dumps(pair["ra"]))
  arrays, meta = checkpoint.load_arrays(os.path.join(pair["a"], populations.POPULATIONS_FILE))
  change(arrays)
  checkpoint.save_arrays(str(d / populations.POPULATIONS_FILE), arrays, meta)  # valid checksums: only content lies
  return str(d)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"unlearned/retain_accuracy": np.array(["0.9"] * N)}),
     "array 'unlearned/retain_accuracy' must hold real numbers, got dtype <U3"),
    (lambda a: a.update({"retrained/forget_confidence": a["retrained/forget_confidence"] * (1 + 1j)}),
     "array 'retrained/forget_confidence' is complex (complex64); it must hold real numbers"),
    (lambda a: a.update({"unlearned/test_accuracy": np.full(N, 3.0, np.float32)}), "must hold accuracies in [0, 1]"),
    (lambda a: a.update({"epsilons": -a["epsilons"] - 1.0}), "epsilons must lie in [0, 50]"),
    (lambda a: a.update({"points": a["points"] * 0.5 + 0.25}), "'points' is not the points of 'epsilons' at N = 8"),
    (lambda a: a.update({"epsilons": a["epsilons"] + 0.5, "points": epsilon_points(a["epsilons"] + 0.5, N)}),
     "per_example_epsilons of results.json differ from the populations file's epsilons"),
    (lambda a: _fewer_models(a), f"populations hold {N - 1} models per kind but results.json says "
                                 f"num_models_scored = {N}"),
])
def test_edited_populations_are_refused(tmp_path, capsys, pair, change, message):
  bad = _edit_populations(tmp_path, pair, change)
  for argv in (["stability", pair["b"], bad, "--plot", ""], ["compare", pair["b"], bad, "--output", ""],
               ["compare", bad, pair["b"]]):
    err = _cli_error(capsys, argv)
    assert message in err, (argv, err)


def _fewer_models(arrays) -> None:
  """Drops the last model of every population and rescores: a file consistent in itself, not with results.json."""
  for name in list(arrays):
    if name.startswith(("unlearned/", "retrained/")):
      arrays[name] = arrays[name][:N - 1]
  res = forgetting_metric(arrays["unlearned/forget_confidence"], arrays["retrained/forget_confidence"])
  arrays["epsilons"] = np.asarray(res.epsilons, np.float64)
  arrays["points"] = epsilon_points(arrays["epsilons"], N - 1)


def test_populations_with_too_few_models_are_refused():
  a = {"unlearned/forget_confidence": np.zeros((1, E), np.float32), "epsilons": np.zeros(E),
       "points": np.ones(E)}
  with pytest.raises(ValueError, match="populations of 1 model"):
    untrusted.check_population_arrays(a, "p")


HOSTILE_NAME = "evil\n| x |\x1b[31mred\x1b[0m\r"


def test_text_fields_are_escaped_in_tables_and_on_the_terminal(tmp_path, capsys, pair):
  d = _edited(tmp_path, pair, lambda r: dict(r, method=HOSTILE_NAME, dataset="digits\x1b[2J"))
  runs = [pair["b"], d]
  for argv in (["leaderboard", *runs], ["leaderboard", "--format", "csv", *runs], ["compare", d, pair["b"]],
               ["stability", *runs, "--repeats", "2", "--plot", ""]):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out, argv
    assert "evil\\n" in out and "\\x1b[31mred" in out, (argv, out)
    if argv[0] in ("leaderboard", "stability") and "csv" not in argv:  # markdown: one row per line, | escaped
      row = next(line for line in out.splitlines() if "evil" in line)
      assert "\\| x \\|" in row and row.startswith("|") and row.endswith("|")
      assert len({line.count("|") - line.count("\\|") for line in out.splitlines() if line.startswith("|")}) == 1


def test_markdown_cell_and_terminal_text():
  assert untrusted.terminal_text("a\nb\x1b[0m\x7f") == "a\\nb\\x1b[0m\\x7f"
  assert untrusted.markdown_cell("a|b\n") == "a\\|b\\n"
  assert untrusted.terminal_text("plain ü text") == "plain ü text"


# ---------------------------------------------------------------------------
# 2. Settings checked before any work.


def _no_work(cache: str, out: str) -> None:
  """Nothing trained: no model cache entry and no output folder."""
  entries = os.listdir(cache) if os.path.isdir(cache) else []
  assert not [e for e in entries if e.startswith(("original-", "retrained-"))], entries
  assert not os.path.exists(out)


def _evaluate(tmp_path, *extra):
  return ["evaluate", "--config", "tiny", "--quiet", "--cache-dir", str(tmp_path / "c"), "--output-dir",
          str(tmp_path / "out"), *extra]


@pytest.mark.parametrize("extra, message", [
    (["--set", "recipe_overrides.lr=nan"], "recipe field 'lr' must be a finite number > 0, got 'nan'"),
    (["--set", "recipe_overrides.lr=-1"], "recipe field 'lr' must be a finite number > 0, got -1"),
    (["--set", "recipe_overrides.momentum=2"], "recipe field 'momentum' must be a finite number in [0, 1], got 2"),
    (["--set", "recipe_overrides.weight_decay=abc"], "recipe field 'weight_decay' must be a finite number >= 0"),
    (["--set", "recipe_overrides.batch_size=1e12"], "recipe field 'batch_size' must be an integer in [1, 2147483647]"),
    (["--set", "recipe_overrides.lr_table=[1, .nan]"], "recipe field 'lr_table' must be null or a list of finite"),
    (["--epochs", "0"], "the number of epochs (--epochs, recipe_overrides.epochs) must be an integer in [1, "),
    (["--set", "recipe_overrides.epochs=2.5"], "the number of epochs (--epochs, recipe_overrides.epochs)"),
    (["--epochs", "100000000"], "must be an integer in [1, 100,000] (the bound on training epochs), got 100000000"),
    (["--set", "recipe_overrides.epochs=100000000"], "must be an integer in [1, 100,000] (the bound on training "),
    (["--metrics", "klom", "--set", "cache_params=false"], "--metrics klom measures the retrained models' margins"),
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["--hp", "epochs=1e12"], "hyperparameter 'epochs' must be an integer >= 1 (or null) and within +-2147483647"),
    (["--bootstrap", "100000000000"], "--bootstrap 100000000000 exceeds the bound of 100,000 draws"),
    (["--bootstrap", "50000", "--num-models", "512"], "the bound is B x N <= 20,000,000 (B <= 39,062 at this N)"),
    (["--max-hours", "0"], "--max-hours must be a number of hours in (0, 8760]"),
    (["--max-hours", "nan"], "--max-hours must be a number of hours in (0, 8760]"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, capsys, extra, message):
  err = _cli_error(capsys, _evaluate(tmp_path, *extra))
  assert message in err, err
  _no_work(str(tmp_path / "c"), str(tmp_path / "out"))


def test_total_optimiser_steps_are_bounded_before_work(tmp_path, capsys, monkeypatch):
  from unlearn_jax.data import load_dataset, make_splits
  from unlearn_jax.training import recipes
  base = recipes.digits_recipe(epochs=3, batch_size=7)
  assert recipes.check_total_steps(base, 700) == 3 * 100 and recipes.check_total_steps(base, 701) == 3 * 101
  huge = recipes.digits_recipe(epochs=100_000, batch_size=1)
  recipes.check_total_steps(huge, 21_474)  # 2,147,400,000 steps: within a 32-bit count
  with pytest.raises(ValueError, match=r"= 2,147,500,000 optimiser steps; the bound is epochs x steps per epoch "
                                       r"<= 2,147,483,647"):
    recipes.check_total_steps(huge, 21_475)  # CIFAR-sized at batch size 1 would wrap the step count
  # through the command: the split sizes are known once the data is loaded, and nothing is trained
  _, data = make_splits(load_dataset("digits"), EvalConfig().split)
  train = int(data.split("train").shape[0])
  steps = 3 * -(-train // 64)
  monkeypatch.setattr(recipes, "MAX_TOTAL_STEPS", steps - 1)
  err = _cli_error(capsys, _evaluate(tmp_path, "--epochs", "3", "--set", "recipe_overrides.batch_size=64"))
  assert f"recipe epochs 3 x {-(-train // 64)} steps per epoch ({train:,} train examples at batch_size 64)" in err
  _no_work(str(tmp_path / "c"), str(tmp_path / "out"))


def test_the_original_states_its_cost_after_its_first_epoch_and_honours_max_hours(tmp_path, capsys):
  cache, out = tmp_path / "c", tmp_path / "out"
  assert cli.main(["evaluate", "--config", "tiny", "--epochs", "4", "--num-models", "2", "--cache-dir", str(cache),
                   "--output-dir", str(out), "--max-hours", "1e-9"]) == 2
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert "Traceback" not in captured.err + captured.out
  assert lines[-1].startswith("unlearn-jax: error: this run would take about")
  assert "(stage original: 3 more epoch(s) at" in lines[-1] and "over --max-hours 1e-09" in lines[-1]
  estimate = [line for line in lines if line.startswith("[budget] original:")]
  assert len(estimate) == 1 and "s per epoch measured (1 epoch(s)" in estimate[0] and "3 left" in estimate[0]
  for entry in os.listdir(cache):  # nothing saved: no original model, no retrained chunk
    assert entry.startswith("original-") and not [f for f in os.listdir(cache / entry) if f.endswith(".npz")], entry
  assert not out.exists()


@pytest.mark.slow  # two compilations of a training run; the budget test above runs the epoch-by-epoch path by default
def test_the_original_trained_epoch_by_epoch_equals_one_scan():
  import jax
  from unlearn_jax.protocol import stages
  from unlearn_jax.results.progress import Progress
  from unlearn_jax.training import make_train_fn
  ctx = build_context(EvalConfig(num_models=2, recipe_overrides=(("epochs", 3),), conv_impl="gemm"))
  measure = stages.make_measure_fn(ctx.model)
  key = jax.random.key(5)
  got = stages.train_original(ctx, key, measure, Progress(enabled=False))
  want = jax.jit(make_train_fn(ctx.model, ctx.recipe, split="train"))(key, ctx.data)  # every epoch in one scan
  assert int(got["out"]["kept_epoch"]) == int(want.best_epoch)
  for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(want.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe, message", [
    ('{"lr": NaN, "epochs": 1}', "recipe field 'lr' must be a finite number > 0, got nan"),
    ('{"epochs": 100001}', "must be an integer in [1, 100,000] (the bound on training epochs), got 100001"),
])
def test_bad_recipe_in_a_json_config_is_refused_before_training(tmp_path, capsys, recipe, message):
  (tmp_path / "bad.json").write_text('{"recipe_overrides": %s, "num_models": 2}' % recipe)
  err = _cli_error(capsys, ["evaluate", "--config", str(tmp_path / "bad.json"), "--quiet", "--cache-dir",
                            str(tmp_path / "c"), "--output-dir", str(tmp_path / "out")])
  assert message in err, err
  _no_work(str(tmp_path / "c"), str(tmp_path / "out"))


@pytest.mark.parametrize("content, message", [
    ('{"with_ceiling": "yes"}', "key 'with_ceiling' must be true or false, got 'yes'"),
    ('{"confirm": [1]}', "key 'confirm' must be true or false, got [1]"),
    ('{"compile_cache": 1}', "key 'compile_cache' must be true or false, got 1"),
    ('{"bootstrap": true}', "key 'bootstrap' must be an integer (draws; 0 for none), got True"),
    ('{"max_hours": "1"}', "key 'max_hours' must be a number of hours or null, got '1'"),
])
def test_booleans_and_numbers_of_config_files_have_their_types(tmp_path, capsys, content, message):
  (tmp_path / "c.json").write_text(content)
  for command in ("evaluate", "sweep"):
    err = _cli_error(capsys, [command, "--config", str(tmp_path / "c.json"), "--output-dir", str(tmp_path / "o")])
    assert message in err, err
  assert not os.path.exists(tmp_path / "o")


def test_methods_with_an_unknown_dataset(capsys):
  for argv in (["methods", "scrub", "--dataset", "nosuch"], ["methods", "--dataset", "nosuch"]):
    assert "unknown dataset 'nosuch'" in _cli_error(capsys, argv)
  assert cli.main(["methods", "finetune", "--dataset", "competition"]) == 0
  assert "# defaults of dataset 'competition': preset=kaggle" in capsys.readouterr().out


def test_cache_params_keys_the_retrained_store_and_keeps_the_default_key():
  config = EvalConfig(num_models=2, recipe_overrides=(("epochs", 1),), conv_impl="gemm")
  ctx = build_context(config)
  with_params = ctx.key_parts("retrained")
  without = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, cache_params=False)).key_parts("retrained")
  assert "cache_params" not in with_params  # the default key is the one existing caches were written under
  assert without == dict(with_params, cache_params=False)
  assert checkpoint.cache_key(without) != checkpoint.cache_key(with_params)
  original = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, cache_params=False)).key_parts("original")
  assert original == ctx.key_parts("original")  # the original model does not depend on it


def test_sweep_grid_bounds(tmp_path, capsys):
  err = _cli_error(capsys, ["sweep", "--config", "tiny", "--grid", "epochs=1,1e12", "--output-dir", str(tmp_path / "s")])
  assert "hyperparameter 'epochs' must be an integer >= 1 (or null) and within +-2147483647" in err
  assert not os.path.exists(tmp_path / "s")


# ---------------------------------------------------------------------------
# 3. Upper bounds of the resampling commands.


def test_compare_draws_and_stability_repeats_are_bounded(capsys, pair):
  err = _cli_error(capsys, ["compare", pair["a"], pair["b"], "--draws", "1000000000"])
  assert "--draws 1000000000 exceeds the bound of 100,000" in err
  err = _cli_error(capsys, ["compare", pair["a"], pair["b"], "--draws", "1"])
  assert "--draws must be an integer >= 2, got 1" in err
  err = _cli_error(capsys, ["stability", pair["a"], pair["b"], "--repeats", "1000000", "--plot", ""])
  assert "--repeats 1000000 exceeds the bound of 10,000" in err
  err = _cli_error(capsys, ["compare", pair["a"], pair["b"], "--permutations", "1000000000"])
  assert "--permutations 1000000000 exceeds the bound of 100,000" in err
  err = _cli_error(capsys, ["compare", pair["a"], pair["b"], "--permutations", "0"])
  assert "--permutations must be an integer >= 1, got 0" in err


def test_bounds_scale_with_the_sizes():
  settings.check_compare_draws(100_000, 1000)  # exactly at the cell bound
  with pytest.raises(ValueError, match=r"draws <= 99,900 here"):
    settings.check_compare_draws(100_000, 1001)
  assert settings.check_compare_permutations(None, 10 ** 9) is None  # the default is not the user's to bound
  settings.check_compare_permutations(100_000, 20)  # exactly at the column bound
  with pytest.raises(ValueError, match=r"permutations <= 95,238 here"):
    settings.check_compare_permutations(100_000, 21)
  settings.check_repeats(10_000, 2, 512, 9)
  with pytest.raises(ValueError, match=r"R x M x N x E <= 100,000,000 \(R <= 97 here\)"):
    settings.check_repeats(98, 2, 512, 1000)
  assert settings.check_bootstrap(0, 512) == 0
  assert settings.check_bootstrap(39_062, 512) == 39_062
  with pytest.raises(ValueError, match="B x N"):
    settings.check_bootstrap(39_063, 512)


# ---------------------------------------------------------------------------
# 4. The time budget.


class FakeClock:
  def __init__(self):
    self.now, self.compiled = 100.0, 0.0

  def __call__(self):
    return self.now


def _budget(hours, lines):
  clock = FakeClock()
  return budget.Budget(hours, log=lines.append, clock=clock, compile_clock=lambda: clock.compiled), clock


def test_stage_estimate_excludes_compilation_and_refuses_past_the_budget():
  lines = []
  b, clock = _budget(1.0, lines)
  stage = budget.StageBudget(b, "retrained", 100)
  clock.now += 50.0      # the first chunk: 10 models, 40 s of it compiling
  clock.compiled += 40.0
  stage.after_chunk(10, 10)  # 1 s per model: 90 s left, well within an hour
  assert len(lines) == 1 and "1 s per model" in lines[0] and "40.0 s of compilation excluded" in lines[0]
  assert "90 left, about 1.5 min more; run so far 50 s, estimated total 2.3 min (budget 1 h)" in lines[0]
  slow = budget.StageBudget(b, "unlearn", 1000)
  clock.now += 50.0      # 10 models at 5 s each: 990 more take 82.5 min, past the hour
  with pytest.raises(budget.BudgetExceeded, match=r"about 84\.2 min \(stage unlearn: 990 more model\(s\) at 5 s each\)"
                                                  r", over --max-hours 1"):
    slow.after_chunk(10, 10)


def test_without_a_budget_only_long_stages_print_and_nothing_is_refused():
  lines = []
  b, clock = _budget(None, lines)
  short = budget.StageBudget(b, "retrained", 20)
  clock.now += 10.0
  short.after_chunk(10, 10)
  assert lines == []
  long = budget.StageBudget(b, "unlearn", 10_000)
  clock.now += 10.0
  long.after_chunk(10, 10)  # 9,990 s left: stated, not refused
  assert len(lines) == 1 and "estimated total 2.8 h" in lines[0]


def test_sweep_states_its_total_after_the_first_computed_point_and_checks_the_budget():
  lines = []
  b, clock = _budget(0.5, lines)
  b.start_points(20)
  b.after_point(reused=True)   # read back: costs nothing, measures nothing
  assert lines == []
  clock.now += 60.0
  b.after_point(reused=False)  # 60 s per point, 18 left: 18 min more
  assert "sweep: 60 s per point measured; 18 point(s) left" in lines[0]
  clock.now += 240.0           # the next point is slower: (60 + 240) / 2 = 150 s per point, 17 left: 47.5 min
  with pytest.raises(budget.BudgetExceeded, match=r"about 47\.5 min \(17 more sweep point\(s\) at 2\.5 min each"):
    b.after_point(reused=False)


def test_max_hours_refuses_after_the_first_chunk_and_leaves_only_whole_chunks(tmp_path, capsys):
  cache, out = tmp_path / "c", tmp_path / "out"
  assert cli.main(["evaluate", "--config", "tiny", "--epochs", "1", "--num-models", "4", "--chunk-size", "2",
                   "--cache-dir", str(cache), "--output-dir", str(out), "--max-hours", "1e-9"]) == 2
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert "Traceback" not in captured.err + captured.out
  errors = [line for line in lines if line.startswith("unlearn-jax:")]
  assert errors == [lines[-1]]  # progress lines, then one error line
  assert "this run would take about" in errors[0] and "(stage retrained: 2 more model(s) at" in errors[0]
  assert "over --max-hours 1e-09" in errors[0] and "every finished chunk saved" in errors[0]
  # the estimate was stated first, after the first chunk
  estimate = [line for line in lines if line.startswith("[budget] retrained:")]
  assert len(estimate) == 1 and "s per model measured (2 model(s)" in estimate[0] and "2 left" in estimate[0]
  assert lines.index(estimate[0]) < len(lines) - 1 and "budget 1e-09 h" in estimate[0]
  retrained = [d for d in os.listdir(cache) if d.startswith("retrained-")]
  assert len(retrained) == 1
  files = sorted(os.listdir(cache / retrained[0]))
  assert files == ["chunk-000000-000002.npz", "key.json"]  # the first chunk, whole; no temporary file beside it
  assert checkpoint.ChunkStore(str(cache / retrained[0])).load(0, 2) is not None
  assert not out.exists()  # no results, no populations, no plots, no unlearning chunks


def test_forecast_of_a_stage_from_the_measured_retrained_time():
  lines = []
  b, clock = _budget(1.0, lines)
  b.forecast("unlearn", 100, "retrained", 0.5)  # nothing measured yet: no estimate, no refusal
  assert lines == []
  stage = budget.StageBudget(b, "retrained", 100)
  clock.now += 20.0
  clock.compiled += 10.0
  stage.after_chunk(100, 100)  # 0.1 s per model
  b.forecast("unlearn", 100, "retrained", 0.5)  # 5 s
  assert lines == ["[budget] unlearn: about 5 s for 100 model(s) (0.5 x the retrained time of 0.1 s per model); "
                   "estimated total 25 s (budget 1 h)"]
  with pytest.raises(budget.BudgetExceeded, match=r"before it starts"):
    b.forecast("unlearn", 100, "retrained", 1e4)  # 100,000 s


def test_a_method_set_to_run_for_years_is_refused_before_its_stage(tmp_path, capsys):
  out = tmp_path / "out"
  assert cli.main(["evaluate", "--config", "tiny", "--epochs", "1", "--num-models", "2", "--hp", "epochs=200000000",
                   "--cache-dir", str(tmp_path / "c"), "--output-dir", str(out), "--max-hours", "1"]) == 2
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert "Traceback" not in captured.err and lines[-1].startswith("unlearn-jax: error: this run would take about")
  assert "stage unlearn: 2 model(s) at" in lines[-1] and "before it starts" in lines[-1]
  assert any(line.startswith("[budget] unlearn: about") for line in lines)
  assert not out.exists()  # the unlearning stage never started: no chunk folder


class _Reporting:
  """What a run reports to: its lines and its budget (as ``budget.attach`` sets them up)."""

  def __init__(self, hours, clock):
    self.lines = []
    self.budget = budget.Budget(hours, log=self.lines.append, clock=clock, compile_clock=lambda: 0.0)


def test_the_model_bootstrap_states_its_cost_after_its_first_block_and_honours_max_hours(monkeypatch):
  from unlearn_jax.analysis import evaluators
  from unlearn_jax.metrics import bootstrap as bootstrap_lib
  from unlearn_jax.results.record import Populations
  assert budget.pairs(object(), "bootstrap") is None  # no budget attached: no callback, nothing checked
  rng = np.random.default_rng(0)
  pop = lambda shift: {"forget_confidence": rng.normal(shift, 1.0, (N, E)), "retain_accuracy": np.full(N, 0.9),
                       "test_accuracy": np.full(N, 0.9)}
  pops = Populations(pop(0.5), pop(0.0), np.zeros(E))
  monkeypatch.setattr(bootstrap_lib, "PAIR_BLOCK", 64)  # 20 draws x 12 examples = 240 pairs: blocks of 64
  ticks = iter(np.arange(0.0, 1e9, 1000.0))  # every reading of the clock is 1,000 s later
  run = _Reporting(1.0, lambda: float(next(ticks)))
  request = evaluators.Request(bootstrap=20, budget=lambda stage: budget.pairs(run, stage))
  # the first block took 1,000 s: 176 pairs left at 15.6 s each, and 3,000 s already spent, is over an hour
  with pytest.raises(budget.BudgetExceeded, match=r"\(stage bootstrap: 176 more pair\(s\) at 15\.6 s each\), "
                                                  r"over --max-hours 1;"):
    evaluators.bootstrap(pops, request)
  assert len(run.lines) == 1 and run.lines[0].startswith("[budget] bootstrap: 15.6 s per pair measured (64 pair(s)")
  assert "176 left" in run.lines[0]
  calm = _Reporting(None, lambda: 0.0)  # no --max-hours and no time passing: nothing said, nothing refused
  request = evaluators.Request(bootstrap=20, budget=lambda stage: budget.pairs(calm, stage))
  assert evaluators.bootstrap(pops, request)["num_draws"] == 20 and calm.lines == []


def test_sweep_refuses_past_its_budget(tmp_path, capsys):
  out = tmp_path / "sweep"
  err = _cli_error(capsys, ["sweep", "--config", "tiny", "--epochs", "1", "--num-models", "2", "--chunk-size", "1",
                            "--grid", "epochs=1,2", "--quiet", "--cache-dir", str(tmp_path / "c"), "--output-dir",
                            str(out), "--max-hours", "1e-9"])
  assert "over --max-hours 1e-09" in err
  assert not any(os.path.exists(out / f) for f in ("sweep.md", "sweep.csv", "sweep.json"))


# ---------------------------------------------------------------------------
# 5. A config that exits or interrupts.


@pytest.mark.parametrize("body, message", [
    ("import sys\nsys.exit(3)\n", "called sys.exit(3) while loading"),
    ("raise SystemExit\n", "called sys.exit() while loading"),
    ("raise KeyboardInterrupt\n", "raised KeyboardInterrupt while loading"),
    ("import sys\ndef get_config():\n  sys.exit('bye')\n", "get_config() of config file"),
    ("def get_config():\n  raise KeyboardInterrupt('stop')\n", "raised KeyboardInterrupt: stop"),
])
def test_config_that_exits_is_one_line(tmp_path, capsys, body, message):
  (tmp_path / "exits.py").write_text(body)
  err = _cli_error(capsys, ["evaluate", "--config", str(tmp_path / "exits.py"), "--output-dir", str(tmp_path / "o")])
  assert f"config file '{tmp_path / 'exits.py'}'" in err and message in err, err
  if "bye" in body:
    assert "called sys.exit('bye')" in err
