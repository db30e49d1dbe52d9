"""``unlearn-jax score``: results on the conformance vectors and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import VECTORS_DIR
from unlearn_jax.cli import main

VECTOR = str(VECTORS_DIR / "small_n16.npz")


@pytest.fixture
def vector_files(tmp_path):
  d = np.load(VECTOR)
  u, r = tmp_path / "u.npz", tmp_path / "r.npz"
  np.savez(u, confs=d["unlearned_confs"])
  np.savez(r, confs=d["retrained_confs"])
  return str(u), str(r), d


def test_score_writes_json(vector_files, tmp_path, capsys):
  u, r, d = vector_files
  out = tmp_path / "res.json"
  assert main(["score", "--unlearned", u, "--retrained", r, "--output", str(out)]) == 0
  assert "forgetting quality: 0.115625" in capsys.readouterr().out
  res = json.loads(out.read_text())
  assert res["forgetting_quality"] == float(d["expected_forgetting_quality"])
  assert res["num_models"] == 16 and res["num_examples"] == 10
  np.testing.assert_allclose(res["per_example_epsilons"], d["expected_epsilons"], atol=1e-4)


def test_score_from_logits(tmp_path, capsys):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, size=4)
  u, r = tmp_path / "u.npz", tmp_path / "r.npz"
  np.savez(u, logits=rng.normal(size=(6, 4, 3)).astype(np.float32), labels=labels)
  np.savez(r, logits=rng.normal(size=(6, 4, 3)).astype(np.float32), labels=labels)
  assert main(["score", "--unlearned", str(u), "--retrained", str(r)]) == 0
  assert "N = 6 models, E = 4 forget examples" in capsys.readouterr().out


def _error(capsys, argv):
  code = main(argv)
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("unlearn-jax: error: ") and err.count("\n") == 1
  return err


def test_score_errors(tmp_path, capsys):
  good, bad_shape, one_model, nan, empty, wrong_labels = (tmp_path / f"{n}.npz" for n in
                                                          ("good", "shape", "one", "nan", "empty", "labels"))
  np.savez(good, confs=np.zeros((4, 3)) + np.arange(4)[:, None])
  np.savez(bad_shape, confs=np.zeros((4, 5)))
  np.savez(one_model, confs=np.zeros((1, 3)))
  np.savez(nan, confs=np.full((4, 3), np.nan))
  np.savez(empty, other=np.zeros(3))
  np.savez(wrong_labels, logits=np.zeros((4, 3, 2)), labels=np.zeros(5, int))
  args = lambda u, r: ["score", "--unlearned", str(u), "--retrained", str(r)]
  err = _error(capsys, args(good, bad_shape))
  assert "(4, 3)" in err and "(4, 5)" in err
  assert "N >= 2" in _error(capsys, args(one_model, one_model))
  err = _error(capsys, args(good, nan))
  assert "'confs'" in err and "non-finite" in err
  assert "'logits'" in _error(capsys, args(empty, good))
  assert "'labels'" in _error(capsys, args(wrong_labels, good))
  assert "no such file" in _error(capsys, args(tmp_path / "missing.npz", good))
