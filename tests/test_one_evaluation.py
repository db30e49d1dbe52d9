"""One configuration through every entry point: ``unlearn-jax evaluate``, :func:`unlearn_jax.evaluate` and a
sweep point give the same ``results.json`` record and the same ``populations.npz``.

The configuration asks for everything an evaluation can compute (U-LiRA, KLOM, bootstrap
intervals, the ceiling, the no-op check), on the tiny config at N = 4 with one cache.
The only fields allowed to differ are listed in :data:`EXEMPT`, each with its reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time

import numpy as np
import pytest

import unlearn_jax
from tests.helpers import load_results
from unlearn_jax import checkpoint, cli
from unlearn_jax.results import populations

N = 4
LR = 0.1
METRICS = "competition,ulira,klom"
DRAWS = 20
# field -> why it may differ between entry points
EXEMPT = {
    ("wall_s",): "times",
    ("cache", "unlearned"): "each run stores its resumable unlearning chunks under its own output folder",
    ("cache", "original_reused"): "the first run trains the original model, later ones read it from the cache",
}


def _cli(argv):
  err, out = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    rc = cli.main(argv)
  assert rc == 0, err.getvalue()
  return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("paths")
  cache = str(base / "cache")
  common = ["--config", "tiny", "--num-models", str(N), "--method", "finetune", "--metrics", METRICS,
            "--bootstrap", str(DRAWS), "--with-ceiling", "--cache-dir", cache]
  t0 = time.perf_counter()
  stdout, stderr = _cli(["evaluate", *common, "--hp", f"lr={LR}", "--output-dir", str(base / "cli")])
  cli_wall = time.perf_counter() - t0
  api = unlearn_jax.evaluate("digits", "finetune", N, config="tiny", hp={"lr": LR}, metrics=METRICS, bootstrap=DRAWS,
                             with_ceiling=True, cache_dir=cache, output_dir=str(base / "api"), verbose=False)
  _cli(["sweep", *common, "--grid", f"lr={LR}", "--output-dir", str(base / "sweep"), "--set", "plots=false"])
  api_silent = unlearn_jax.evaluate("digits", "finetune", N, config="tiny", hp={"lr": LR}, metrics=METRICS,
                                    bootstrap=DRAWS, with_ceiling=True, cache_dir=cache, verbose=False)
  dirs = {"cli": str(base / "cli"), "api": str(base / "api"), "sweep": str(base / "sweep" / f"lr_{LR}")}
  return dict(dirs=dirs, records={k: load_results(d) for k, d in dirs.items()}, api=api, api_silent=api_silent,
              stdout=stdout, stderr=stderr, cli_wall=cli_wall, cache=cache)


def _strip(record):
  out = json.loads(json.dumps(record))
  for path in EXEMPT:
    node = out
    for key in path[:-1]:
      node = node[key]
    node.pop(path[-1])
  return out


def test_every_entry_point_records_the_same_results(runs):
  records = runs["records"]
  cli_record = records["cli"]
  for field in ("ulira", "klom", "bootstrap", "ceiling", "degenerate", "margin_examples"):  # all were computed
    assert field in cli_record, field
  assert cli_record["metrics"] == ["competition", "ulira", "klom"] and cli_record["bootstrap"]["num_draws"] == DRAWS
  for name in ("api", "sweep"):
    other = records[name]
    assert set(other) == set(cli_record), name
    assert _strip(other) == _strip(cli_record), name
  # the returned dict is the written record
  assert json.loads(json.dumps(runs["api"])) == records["api"]
  # without an output folder the API computes the same record (its chunks went to a temporary folder)
  assert _strip(runs["api_silent"]) == _strip(cli_record)
  assert not os.path.exists(runs["api_silent"]["cache"]["unlearned"])


def test_every_entry_point_writes_the_same_populations(runs):
  arrays = {name: checkpoint.load_arrays(os.path.join(d, populations.POPULATIONS_FILE))[0]
            for name, d in runs["dirs"].items()}
  assert {"unlearned/retain_margin", "retrained/heldout_margin", "epsilons"} <= set(arrays["cli"])
  for name in ("api", "sweep"):
    assert set(arrays[name]) == set(arrays["cli"]), name
    for key, value in arrays["cli"].items():
      np.testing.assert_array_equal(arrays[name][key], value, err_msg=f"{name}: {key}")
  # and the record's epsilons are the file's
  np.testing.assert_array_equal(arrays["cli"]["epsilons"], runs["records"]["cli"]["per_example_epsilons"])


def test_stability_reads_sweep_points_like_evaluate_folders(runs, tmp_path):
  out, _ = _cli(["stability", runs["dirs"]["cli"], runs["dirs"]["sweep"], "--sizes", "2,4", "--repeats", "2",
                 "--plot", ""])
  assert out.count("finetune (") >= 2  # both folders read, named apart by folder


@pytest.mark.parametrize("options, message", [
    (dict(plots=True), "plots need an output directory"),
    (dict(grid={"lr": [0.1, 0.2]}), "the config has a sweep grid"),
    (dict(confirm=True), "'confirm', which applies to sweeps only"),
    (dict(bootstrap=1), "--bootstrap must be an integer >= 2"),
    (dict(metrics="competition,lira"), "unknown metric(s) ['lira']"),
])
def test_an_option_the_api_cannot_honour_is_a_one_line_error(tmp_path, options, message):
  with pytest.raises(ValueError) as err:
    unlearn_jax.evaluate("digits", "finetune", N, config="tiny", cache_dir=str(tmp_path), verbose=False, **options)
  assert message in str(err.value) and "\n" not in str(err.value)
  assert not os.listdir(tmp_path)  # refused before anything was trained or written


def test_evaluate_with_a_sweep_key_is_a_one_line_cli_error(tmp_path, capsys):
  rc = cli.main(["evaluate", "--config", "tiny", "--set", "confirm=true", "--cache-dir", str(tmp_path / "c"),
                 "--output-dir", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and err[0].startswith("unlearn-jax: error: the config sets 'confirm'")


def test_method_diagnostics_reach_populations_results_and_the_summary(runs):
  """``UnlearnResult.metrics`` (finetune: its loss per epoch) is kept per seed and summarised over seeds."""
  arrays, _ = checkpoint.load_arrays(os.path.join(runs["dirs"]["cli"], populations.POPULATIONS_FILE))
  loss = arrays["diagnostics/loss"]
  assert loss.shape[0] == N and loss.ndim == 2 and np.all(np.isfinite(loss))
  chunks = runs["records"]["cli"]["cache"]["unlearned"]
  stored = np.concatenate([checkpoint.load_arrays(os.path.join(chunks, f))[0]["diag/loss"]
                           for f in sorted(os.listdir(chunks)) if f.startswith("chunk-")])
  np.testing.assert_array_equal(loss, stored)  # what the method returned, per seed
  last = loss[:, -1].astype(np.float64)
  summary = runs["records"]["cli"]["diagnostics"]["loss"]
  assert loss.shape[1] == 1  # one epoch of finetune in the tiny config: one loss per seed
  assert summary["of"] == "last entry" and summary["shape"] == [1] and summary["nonfinite"] == 0
  assert summary["num_seeds"] == N
  assert summary["mean"] == pytest.approx(float(np.mean(last)), rel=1e-12)
  assert summary["sd"] == pytest.approx(float(np.std(last, ddof=1)), rel=1e-12)
  assert (summary["min"], summary["max"]) == (float(last.min()), float(last.max()))
  assert f"diagnostic loss[-1] (of 1 per seed): mean {summary['mean']:.4g} " in runs["stdout"]
  assert populations.read_populations(runs["dirs"]["sweep"])["diagnostics/loss"].shape == loss.shape


def test_the_reported_total_time_covers_every_stage(runs):
  """The total covers every stage, writing populations.npz and the plots included (only results.json, which
  records it, comes after), and no more than the command's own wall time; progress shows each stage."""
  walls = runs["records"]["cli"]["wall_s"]
  assert {"load", "original", "retrained", "margins", "unlearn", "metric", "ceiling", "evaluations", "bootstrap",
          "write"} <= set(walls)
  assert walls["total"] >= sum(v for k, v in walls.items() if k != "total") - 1e-6
  assert walls["total"] <= runs["cli_wall"]
  err = runs["stderr"]
  assert f"[evaluations] ulira and klom on {N} unlearned and {N} retrained models" in err
  assert "[evaluations] ulira and klom done in " in err and "[bootstrap] done in " in err
  assert "(example, draw) pairs" in err
