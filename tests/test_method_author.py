"""A method author's contract, end to end on the tiny config.

* ``HPARAMS`` must agree with ``make``'s signature (names, defaults, kinds), for a file
  and for an importable module alike: each disagreement is refused in one line naming
  the parameter, by ``evaluate`` and ``sweep`` (before anything is trained) and by ``methods``;
* a method whose unlearned model differs from the original's tree (a leaf of another
  shape or dtype, a missing leaf, not an ``UnlearnResult``) is refused in one line naming
  the leaf;
* the method's own diagnostics (``UnlearnResult.metrics``) reach the chunk files,
  ``populations.npz`` (per scored seed) and ``results.json`` (mean, sd, min, max), and the
  printed summary;
* ``wall_s``: every stage is timed (bootstrap and ceiling included) and the total is
  at least their sum; progress shows each stage, the bootstraps' blocks included;
* after ``--allow-nan-drop``, F / F_ceiling compares both at the kept N.
"""

from __future__ import annotations

import json
import os
import pathlib
import textwrap
import zlib

import jax
import numpy as np
import pytest

from tests.helpers import load_results, run_cli
from unlearn_jax import checkpoint
from unlearn_jax.results import populations
from unlearn_jax.metrics import bootstrap, forgetting_metric

N = 4
THRESHOLD = 0.4  # seeds whose uniform draw falls below it diverge (NaN parameters)
DRAWS = 30  # bootstrap draws: 30 x 144 forget examples = 4,320 (example, draw) pairs, two blocks of progress

METHOD = '''
import jax
import jax.numpy as jnp
from unlearn_jax.unlearning import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

HPARAMS = (
    HParam("scale", "float", 0.9, low=0, doc="multiplier of every parameter"),
    HParam("diverge_below", "float", 0.0, low=0, high=1, doc="seeds whose draw is below it return NaN"),
)


def make(model, scale: float = 0.9, diverge_below: float = 0.0):
  def unlearn(original, data, key):
    u = jax.random.uniform(key)
    params = jax.tree.map(lambda p: jnp.where(u < diverge_below, jnp.nan, p * scale), original.params)
    return UnlearnResult(ModelState(params, original.batch_stats),
                         {{"draw": u, "trace": jnp.stack([u, 2 * u, 3 * u]), "group": {{"half": u / 2}}}})
  {body}
  return UnlearningMethod("dampen", unlearn, lambda sizes: 0.0, "a test method",
                          dict(scale=scale, diverge_below=diverge_below))
'''


def _error_line(stderr: str) -> str:
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("unlearn-jax: error: "), stderr
  return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  return tmp_path_factory.mktemp("author")


def _args(base: pathlib.Path, out: str) -> list[str]:
  return ["--config", "tiny", "--epochs", "2", "--num-models", str(N), "--cache-dir", str(base / "cache"),
          "--output-dir", str(base / out), "--no-plots"]


def _method_file(base: pathlib.Path, name: str, body: str = "") -> str:
  path = base / f"{name}.py"
  path.write_text(METHOD.format(body=body))
  return f"{path}:make"


# ------------------------------------------------------------------ declarations vs signature


BAD_DECLARATIONS = [
    # (HPARAMS, signature, message part)
    ('HParam("lambda_", "float", 1.0, doc="x")', "lam: float = 1.0",
     "declares 'lambda_', but the factory has no parameter 'lambda_' (its parameters: lam)"),
    ('HParam("steps", "int", 12, low=1, doc="x")', "steps: int = 10",
     "'steps' is declared with default 12, but the factory's default is 10"),
    ('HParam("steps", "int", 10, low=1, doc="x")', "steps: float = 10",
     "'steps' is declared of kind 'int', but the factory annotates it as float"),
    ('HParam("steps", "int", 10, low=1, doc="x")', "steps: int = 10, lr: float = 0.1",
     "does not declare the factory's parameter 'lr'"),
    ('HParam("mode", "str", "a", choices=("b", "c"), doc="x")', 'mode: str = "a"',
     "'mode' has default 'a', which is not one of 'b', 'c'"),
    ('HParam("flag", "bool", False, doc="x")', "flag: bool = True",
     "'flag' is declared with default False, but the factory's default is True"),
]


def _declaring_source(decl: str, signature: str) -> str:
  return textwrap.dedent(f"""
      from unlearn_jax.unlearning import UnlearningMethod
      from unlearn_jax.unlearning.hparams import HParam
      HPARAMS = ({decl},)
      def make(model, {signature}):
        return UnlearningMethod("m", lambda o, d, k: None, lambda s: 0.0, "", {{}})
      """)


@pytest.mark.parametrize("decl,signature,message", BAD_DECLARATIONS)
def test_declarations_that_disagree_with_the_signature_are_refused(tmp_path, decl, signature, message):
  path = tmp_path / "declares.py"
  path.write_text(_declaring_source(decl, signature))
  cache, out = tmp_path / "cache", tmp_path / "out"
  _, err = run_cli(["evaluate", "--config", "tiny", "--method", f"{path}:make", "--num-models", "2",
                    "--cache-dir", str(cache), "--output-dir", str(out)], expect_rc=2)
  line = _error_line(err)
  assert "HPARAMS of declares.py:make" in line and message in line, line
  assert not cache.exists() and not out.exists()  # refused before anything is trained
  _, err = run_cli(["methods", f"{path}:make"], expect_rc=2)  # the listing refuses it too
  assert message in _error_line(err)
  name = decl.split('"')[1]  # a sweep over the declared parameter is refused the same way, before training
  _, err = run_cli(["sweep", "--config", "tiny", "--method", f"{path}:make", "--grid", f"{name}=1,2", "--num-models",
                    "2", "--cache-dir", str(cache), "--output-dir", str(out)], expect_rc=2)
  line = _error_line(err)
  assert "HPARAMS of declares.py:make" in line and message in line, line
  assert not cache.exists() and not out.exists()


@pytest.mark.parametrize("decl,signature,message", BAD_DECLARATIONS[:2])
def test_module_declarations_are_checked_like_files(tmp_path, monkeypatch, decl, signature, message):
  name = f"author_pkg_{zlib.crc32(signature.encode())}"  # a fresh package per case (imports are cached)
  package = tmp_path / name
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "method.py").write_text(_declaring_source(decl, signature))
  monkeypatch.chdir(tmp_path)
  _, err = run_cli(["methods", f"{name}.method:make"], expect_rc=2)
  line = _error_line(err)
  assert f"HPARAMS of {name}.method.make" in line and message in line, line


def test_agreeing_declarations_are_listed(tmp_path):
  spec = _method_file(tmp_path, "agrees")
  out, _ = run_cli(["methods", spec])
  assert "scale" in out and "diverge_below" in out


def test_positional_only_parameter_cannot_be_declared():
  from unlearn_jax.unlearning import hparams
  from unlearn_jax.unlearning.hparams import HParam

  def make(model, lr=0.1, /):
    del model, lr

  make.HPARAMS = (HParam("lr", "float", 0.1, doc="x"),)
  with pytest.raises(ValueError, match="takes it positionally only"):
    hparams.declared(make)


# ------------------------------------------------------------------ the unlearned model's tree


@pytest.mark.parametrize("body,message", [
    ("unlearn0 = unlearn\n  def unlearn(o, d, k):\n    r = unlearn0(o, d, k)\n"
     "    p = jax.tree.map(lambda a: a[..., :-1] if a.ndim == 2 else a, r.state.params)\n"
     "    return UnlearnResult(ModelState(p, r.state.batch_stats), r.metrics)",
     "has shape"),
    ("unlearn0 = unlearn\n  def unlearn(o, d, k):\n    r = unlearn0(o, d, k)\n"
     "    p = jax.tree.map(lambda a: a.astype(jnp.float16), r.state.params)\n"
     "    return UnlearnResult(ModelState(p, r.state.batch_stats), r.metrics)",
     "has dtype float16, the original's float32"),
    ("unlearn0 = unlearn\n  def unlearn(o, d, k):\n    r = unlearn0(o, d, k)\n"
     "    p = jax.tree.map(lambda a: a.astype(jnp.int32), r.state.params)\n"
     "    return UnlearnResult(ModelState(p, r.state.batch_stats), r.metrics)",
     "has dtype int32, the original's float32"),
    ("unlearn0 = unlearn\n  def unlearn(o, d, k):\n    r = unlearn0(o, d, k)\n"
     "    p = dict(r.state.params); p.pop(sorted(p)[0])\n"
     "    return UnlearnResult(ModelState(p, r.state.batch_stats), r.metrics)",
     "lacks the original's leaf params/"),
    ("unlearn0 = unlearn\n  def unlearn(o, d, k):\n    return unlearn0(o, d, k).state",
     "unlearn returned a ModelState, not an UnlearnResult"),
])
def test_a_method_returning_another_tree_is_refused_in_one_line(base, body, message):
  spec = _method_file(base, f"tree{zlib.crc32(message.encode())}", body)
  out_dir = f"tree-{zlib.crc32(message.encode())}"
  _, err = run_cli(["evaluate", *_args(base, out_dir), "--method", spec, "--quiet"], expect_rc=2)
  line = _error_line(err)
  assert line.startswith("unlearn-jax: error: method 'dampen': ") and message in line, line
  if "shape" in message or "dtype" in message:
    assert "params/" in line  # names the leaf
  assert not (base / out_dir / "results.json").exists()


# ------------------------------------------------------------------ one run: diagnostics, timing, ceiling


@pytest.fixture(scope="module")
def dropped_run(base):
  """``dampen`` with some seeds diverging, ``--allow-nan-drop --bootstrap DRAWS --with-ceiling``."""
  spec = _method_file(base, "dampen")
  out, err = run_cli(["evaluate", *_args(base, "run"), "--method", spec, "--hp", f"diverge_below={THRESHOLD}",
                      "--allow-nan-drop", "--bootstrap", str(DRAWS), "--with-ceiling"])
  return {"results": load_results(base / "run"), "stdout": out, "stderr": err, "dir": base / "run"}


def _draws() -> np.ndarray:
  """The uniform draw of each seed's unlearning key, fold_in(fold_in(key(seed), UNLEARN = 2), i)."""
  root = jax.random.fold_in(jax.random.key(0), 2)
  return np.array([float(jax.random.uniform(jax.random.fold_in(root, i))) for i in range(N)])


def test_seeds_diverged_as_designed(dropped_run):
  r, draws = dropped_run["results"], _draws()
  assert r["dropped_seeds"] == np.flatnonzero(draws < THRESHOLD).tolist()
  assert 0 < len(r["dropped_seeds"]) <= N - 2, draws  # the test needs some, but not too many, dropped


def test_diagnostics_round_trip_to_populations_results_and_chunks(dropped_run):
  r, draws = dropped_run["results"], _draws()
  kept = np.setdiff1d(np.arange(N), r["dropped_seeds"])
  arrays = populations.read_populations(str(dropped_run["dir"]))
  np.testing.assert_allclose(arrays["diagnostics/draw"], draws[kept], rtol=1e-6)
  np.testing.assert_allclose(arrays["diagnostics/trace"], np.stack([draws, 2 * draws, 3 * draws], 1)[kept],
                             rtol=1e-6)
  np.testing.assert_allclose(arrays["diagnostics/group/half"], draws[kept] / 2, rtol=1e-6)
  d = r["diagnostics"]
  assert set(d) == {"draw", "trace", "group/half"}
  x = draws[kept]
  for name, values in (("draw", x), ("trace", 3 * x), ("group/half", x / 2)):  # trace: its last entry
    s = d[name]
    assert s["num_seeds"] == kept.size and s["nonfinite"] == 0
    assert s["mean"] == pytest.approx(values.mean(), rel=1e-6)
    assert s["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-5)
    assert s["min"] == pytest.approx(values.min(), rel=1e-6) and s["max"] == pytest.approx(values.max(), rel=1e-6)
  assert d["trace"]["shape"] == [3] and d["trace"]["of"] == "last entry" and d["draw"]["shape"] == []
  chunks = r["cache"]["unlearned"]  # every seed, dropped ones included, in the resumable chunk files
  names = sorted(n for n in os.listdir(chunks) if n.startswith("chunk-"))
  stored = np.concatenate([checkpoint.load_arrays(os.path.join(chunks, n))[0]["diag/draw"] for n in names])
  np.testing.assert_allclose(stored, draws, rtol=1e-6)
  assert f"diagnostic draw: mean {x.mean():.4g}" in dropped_run["stdout"]
  assert "diagnostic trace[-1] (of 3 per seed)" in dropped_run["stdout"]


def test_every_stage_is_timed_and_the_total_covers_them(dropped_run):
  walls = dropped_run["results"]["wall_s"]
  stages = {k: v for k, v in walls.items() if k != "total"}
  assert {"load", "original", "retrained", "unlearn", "metric", "bootstrap", "ceiling"} <= set(stages)
  assert all(v >= 0 for v in stages.values())
  assert walls["total"] >= sum(stages.values())
  err = dropped_run["stderr"]
  for stage in ("bootstrap", "ceiling"):
    assert f"[{stage}] done in" in err
  assert f"[bootstrap] {DRAWS} model and {DRAWS} example draws" in err
  # the model bootstraps (the method's, then the ceiling's interval) report each block, the first before the end
  pairs = DRAWS * len(dropped_run["results"]["per_example_epsilons"])
  assert pairs > bootstrap.PAIR_BLOCK
  lines = err.splitlines()
  for stage in ("bootstrap", "bootstrap: ceiling"):
    first = lines.index(f"[{stage}] (example, draw) pairs {bootstrap.PAIR_BLOCK}/{pairs}")
    assert lines[first + 1].startswith(f"[{stage}] (example, draw) pairs {pairs}/{pairs}  ETA "), lines[first + 1]
  assert lines.index(f"[bootstrap] (example, draw) pairs {pairs}/{pairs}  ETA 0 s") < lines.index(
      f"[bootstrap: ceiling] (example, draw) pairs {bootstrap.PAIR_BLOCK}/{pairs}")
  assert f"wall {walls['total']:.1f} s (load" in dropped_run["stdout"] and "bootstrap" in dropped_run["stdout"]


def test_ceiling_ratio_after_a_nan_drop_uses_the_kept_models(dropped_run):
  r = dropped_run["results"]
  kept = np.setdiff1d(np.arange(N), r["dropped_seeds"])
  c = r["ceiling"]
  assert c["num_models"] == kept.size and c["subsampled_from"] == N
  stored = json.loads(pathlib.Path(c["path"]).read_text())
  assert stored["num_models"] == N  # the stored ceiling is at the full N ...
  chunks = stored["unlearned_chunks"]  # ... so the ceiling's own models are re-scored at the kept seeds
  names = sorted((n for n in os.listdir(chunks) if n.startswith("chunk-")),
                 key=lambda n: int(n.split("-")[1]))
  ceiling_conf = np.concatenate([checkpoint.load_arrays(os.path.join(chunks, n))[0]["out/forget_confidence"]
                                 for n in names])
  assert ceiling_conf.shape[0] == N
  arrays = populations.read_populations(str(dropped_run["dir"]))
  assert arrays["retrained/forget_confidence"].shape[0] == kept.size
  expected = float(forgetting_metric(ceiling_conf[kept], arrays["retrained/forget_confidence"]).forgetting_quality)
  assert c["forgetting_quality"] == pytest.approx(expected, abs=1e-12)
  assert c["ratio"] == pytest.approx(r["forgetting_quality"] / expected)
  # --bootstrap: the ceiling's own interval, from its models at the kept seeds against the kept reference
  assert c["interval"]["point"] == pytest.approx(expected, abs=1e-12)
  assert c["interval"]["lo"] <= c["interval"]["point"] <= c["interval"]["hi"]
  assert f"at N={kept.size}, subsampled from {N}" in dropped_run["stdout"]


# ------------------------------------------------------------------ the README's method table


def test_readme_cost_column_equals_the_methods_command():
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
  start = readme.index("| method | R-ep | source |")
  table = {}
  for line in readme[start + 2:]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.split("|")[1:-1]]
    table[cells[0]] = cells[1]
  out, _ = run_cli(["methods"])
  listed = {}
  for line in out.splitlines()[2:]:  # after the comment and the header
    name, cost = line.split()[:2]
    listed[name] = cost
  assert list(table) == list(listed)  # every registered method, in the registry's order
  assert table == listed


def test_summaries_of_scalar_trace_empty_and_nonfinite_diagnostics():
  from unlearn_jax.results import diagnostics
  per_seed = {"x": np.array([1.0, 2.0, np.nan, 4.0]), "trace": np.arange(12.0).reshape(4, 3),
              "empty": np.zeros((4, 0))}
  s = diagnostics.summarise(per_seed)
  assert s["x"] == {"shape": [], "of": "value", "mean": pytest.approx(7 / 3), "sd": pytest.approx(np.std([1, 2, 4], ddof=1)),
                    "min": 1.0, "max": 4.0, "num_seeds": 4, "nonfinite": 1}
  assert (s["trace"]["of"], s["trace"]["min"], s["trace"]["max"], s["trace"]["mean"]) == ("last entry", 2.0, 11.0, 6.5)
  assert s["empty"]["of"] == "empty" and s["empty"]["mean"] is None
  lines = diagnostics.summary_lines({"diagnostics": s})
  assert lines[0].endswith("over 4 seeds; 1 seed(s) non-finite") and lines[2].startswith("diagnostic empty: empty")
