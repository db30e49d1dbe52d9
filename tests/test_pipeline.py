"""Library pieces of the evaluation pipeline: chunk plans, configs, reports (the cache store: test_checkpoint.py)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from unlearn_jax import checkpoint, configs
from unlearn_jax.protocol import config as protocol_config
from unlearn_jax.protocol import runner, scoring, stages
from unlearn_jax.results.progress import Progress
from unlearn_jax.results import report
from unlearn_jax.data import SplitSpec
from unlearn_jax.training import digits_recipe


def test_chunk_plan_reuses_existing_chunks_and_splits_gaps(tmp_path):
  store = checkpoint.ChunkStore(str(tmp_path))
  assert runner.chunk_plan(store, 10, 4) == ([], [(0, 4), (4, 8), (8, 10)])
  for lo, hi in [(0, 4), (8, 12)]:
    store.save(lo, hi, {"x": np.zeros(hi - lo)})
  # [8, 12) lies outside N = 10, so it is not used; the gap [4, 10) is recomputed in chunks of 4
  assert runner.chunk_plan(store, 10, 4) == ([(0, 4)], [(4, 8), (8, 10)])
  # a larger N reuses both files
  assert runner.chunk_plan(store, 16, 4) == ([(0, 4), (8, 12)], [(4, 8), (12, 16)])


def test_nonfinite_seeds_lists_rows_with_any_bad_value():
  out = {name: np.zeros((5, 3)) for name in stages.OUTPUT_NAMES}
  for name in ("retain_accuracy", "forget_accuracy", "test_accuracy"):
    out[name] = np.zeros(5)
  out["forget_confidence"][1, 2] = np.nan
  out["test_loss"][3, 0] = np.inf
  assert scoring.nonfinite_seeds(out).tolist() == [1, 3]


def test_resolve_recipe_overrides_and_rejects_unknown_fields():
  r = protocol_config.resolve_recipe("digits", (("epochs", 3),))
  assert (r.epochs, r.min_save_epoch, r.retrain_min_save_epoch) == (3, 0, 2)
  with pytest.raises(ValueError, match="unknown recipe field"):
    protocol_config.resolve_recipe("digits", (("epoch", 3),))
  with pytest.raises(ValueError, match="unknown recipe"):
    protocol_config.resolve_recipe("nope")


def test_configs_tiny_file_and_set_overrides(tmp_path):
  tiny = configs.load_config("tiny")
  assert tiny["num_models"] == 8 and tiny["recipe_overrides"]["epochs"] == 3
  cfg = configs.apply_overrides(tiny, ["num_models=32", "hp.lr=0.01", "method=none", "plots=false"])
  assert (cfg["num_models"], cfg["hp"], cfg["method"], cfg["plots"]) == (32, {"lr": 0.01}, "none", False)
  with pytest.raises(ValueError, match="unknown config key"):
    configs.apply_overrides(tiny, ["num_model=3"])
  (tmp_path / "c.json").write_text(json.dumps({"num_models": 16, "method": "retrain"}))
  (tmp_path / "c.yaml").write_text("num_models: 24\nhp: {lr: 0.5}\n")
  (tmp_path / "c.py").write_text("def get_config():\n  return {'seed': 7}\n")
  assert configs.load_config(str(tmp_path / "c.json"))["num_models"] == 16
  assert configs.load_config(str(tmp_path / "c.yaml"))["hp"] == {"lr": 0.5}
  assert configs.load_config(str(tmp_path / "c.py"))["seed"] == 7
  (tmp_path / "bad.json").write_text("{nope")
  with pytest.raises(ValueError, match="not valid JSON"):
    configs.load_config(str(tmp_path / "bad.json"))


def _fake_results(tmp_path, name, fq, final):
  d = tmp_path / name
  d.mkdir()
  res = {"method": name, "dataset": "digits", "num_models": 4, "num_models_scored": 4, "forgetting_quality": fq,
         "final_score": final, "unlearned": {"retain_accuracy": {"mean": 0.9}, "test_accuracy": {"mean": 0.8},
                                             "forget_accuracy": {"mean": 0.85}},
         "retrained": {"retain_accuracy": {"mean": 0.95}, "test_accuracy": {"mean": 0.85}},
         "mia": {"unlearned": 0.5}, "cost": {"relative_to_retrain": 0.25}}
  report.write_results(res, str(d))
  return str(d)


def test_leaderboard_ranks_by_final_score_markdown_and_csv(tmp_path):
  dirs = [_fake_results(tmp_path, "a", 0.10, 0.09), _fake_results(tmp_path, "b", 0.18, 0.17),
          _fake_results(tmp_path, "c", 0.0, 0.0)]
  rows = report.leaderboard_rows(dirs)
  assert [r["method"] for r in rows] == ["b", "a", "c"] and [r["rank"] for r in rows] == [1, 2, 3]
  md = report.leaderboard_table(rows).splitlines()
  assert md[0].startswith("| rank") and md[2].startswith("| 1") and "| b " in md[2]
  csv_lines = report.leaderboard_table(rows, "csv").splitlines()
  assert csv_lines[0].split(",")[:2] == ["rank", "method"] and csv_lines[1].split(",")[1] == "b"
  with pytest.raises(ValueError, match="no results file"):
    report.leaderboard_rows([str(tmp_path / "missing")])


def test_parse_value_reads_exponent_floats():
  # YAML 1.1 leaves 1e-4 (no dot) a string; --hp lr=1e-4 must be a number
  assert [configs.parse_value(t) for t in ("1e-4", "2E5", "0.01", "kaggle", "true")] == [1e-4, 2e5, 0.01,
                                                                                           "kaggle", True]


def test_many_corrupt_chunks_are_all_rebuilt_in_one_retry(tmp_path):
  """More bad entries than assembly attempts (e.g. a cache written by an older version) still assemble."""
  import io

  import jax
  import jax.numpy as jnp

  from unlearn_jax import seeds

  seed_runner = seeds.SeedRunner(lambda key, x: {"out/v": jax.random.uniform(key) + x}, "chunked", 2)
  config = protocol_config.EvalConfig(num_models=10)
  store = checkpoint.ChunkStore(str(tmp_path / "store"), "key")
  run = lambda: runner.seed_chunks("retrained", seed_runner, jax.random.key(0), 10, (jnp.float32(1.0),), store,
                                    dict, config, Progress(io.StringIO())).arrays
  clean = run()
  for lo in range(0, 10, 2):  # five entries, all damaged
    pathlib.Path(store.path(lo, lo + 2)).write_bytes(b"not a zip file at all")
  again = run()
  np.testing.assert_array_equal(again["out/v"], clean["out/v"])
  assert len(store.rebuilt) == 5


def test_eval_config_is_exactly_its_four_typed_parts():
  import dataclasses
  names = sorted(f.name for f in dataclasses.fields(protocol_config.EvalConfig))
  parts = [f.name for cls in protocol_config.PARTS for f in dataclasses.fields(cls)]
  assert names == sorted(parts) and len(set(parts)) == len(parts)  # every field in exactly one part
  c = protocol_config.EvalConfig(num_models=7, method="none", bootstrap=5, output_dir="x", seed=3)
  assert protocol_config.EvalConfig.compose(c.setup, c.method_choice, c.evaluations, c.run) == c
  assert (c.setup.num_models, c.setup.seed, c.method_choice.method, c.evaluations.bootstrap, c.run.output_dir) == \
      (7, 3, "none", 5, "x")


def test_train_takes_its_dataset_defaults_from_the_evaluate_config():
  from unlearn_jax.commands import train
  for dataset in ("digits", "cifar10", "cifar10_tarball", "competition", "random_cifar10", "tfds:mnist"):
    cfg = dict(configs.load_config(None), dataset=dataset)
    config = protocol_config.from_dict(cfg)
    assert train.dataset_defaults(dataset) == (config.model, config.recipe), dataset
  assert train.dataset_defaults("cifar10") == ("resnet18", "starting_kit")


def test_diagnostics_summary_of_values_and_of_arrays_per_seed():
  from unlearn_jax.results.record import diagnostics_summary
  scalar = np.array([[1.0], [3.0], [np.nan]])
  per_epoch = np.array([[5.0, 2.0], [4.0, 6.0], [1.0, 4.0]], np.float32)
  out = diagnostics_summary({"fraction": scalar, "loss": per_epoch, "empty": np.zeros((3, 0))})
  assert out["fraction"] == {"mean": 2.0, "sd": 1.0, "min": 1.0, "max": 3.0, "shape": [1], "of": "value",
                             "nonfinite": 1}
  assert out["loss"] == {"mean": 4.0, "sd": float(np.std([2.0, 6.0, 4.0])), "min": 2.0, "max": 6.0, "shape": [2],
                         "of": "last entry", "nonfinite": 0}
  assert "empty" not in out
