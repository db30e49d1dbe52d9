"""A user's own method and model (:mod:`unlearn_jax.plugins`), and :func:`unlearn_jax.evaluate`.

* ``load_factory``: file and module specs, name / source / content hash, and one-line
  errors (malformed spec, missing file or module, import that raises, no such attribute,
  not callable); a factory that raises or returns the wrong thing fails the CLI with one
  line and trains nothing;
* end to end on the tiny config (N = 2): ``examples/kl_finetune.py`` evaluated through the
  CLI from its file gives exactly the numbers of the same factory passed as a Python object
  to ``unlearn_jax.evaluate``; editing the file changes the unlearning cache key, so the
  edited method is recomputed (different numbers) instead of reusing the stale chunks;
* ``--model file.py:make``: the model is used, recorded with its hash, and the hash keys
  the original/retrained cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib

import pytest

import unlearn_jax
from tests.helpers import load_results, run_cli
from unlearn_jax import checkpoint, cli, plugins
from unlearn_jax.protocol.config import from_dict
from unlearn_jax.protocol.context import build_context
from unlearn_jax.unlearning import hparams

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kl_finetune.py"
N = 2


_cli = run_cli


def _error_line(stderr: str) -> str:
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("unlearn-jax: error: "), stderr
  return lines[0]


# ------------------------------------------------------------------ loading


def test_load_factory_from_file_and_module(tmp_path):
  plugin = plugins.load_factory(f"{EXAMPLE}:make", "method")
  assert plugin.name == "kl_finetune:make" and plugin.source == str(EXAMPLE)
  assert plugin.sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
  assert plugins.load_factory(f"{EXAMPLE}:make", "method").factory is plugin.factory  # same contents: reused
  assert list(hparams.declared(plugin.factory)) == ["lr", "kl_weight", "temperature", "epochs", "batch_size",
                                                    "momentum"]
  mod = plugins.load_factory("unlearn_jax.unlearning.neggrad:make", "method")
  from unlearn_jax.unlearning import neggrad
  assert mod.factory is neggrad.make and mod.name == "unlearn_jax.unlearning.neggrad:make"
  assert mod.sha256 == hashlib.sha256(pathlib.Path(neggrad.__file__).read_bytes()).hexdigest()
  # a file may import its neighbours
  (tmp_path / "helper_mod.py").write_text("VALUE = 3\n")
  (tmp_path / "uses_helper.py").write_text("import helper_mod\ndef make(model, k: int = helper_mod.VALUE):\n"
                                           "  return k\n")
  loaded = plugins.load_factory(f"{tmp_path / 'uses_helper.py'}:make", "method")
  assert hparams.declared(loaded.factory)["k"].default == 3


@pytest.mark.parametrize("source,spec,message", [
    (None, "{d}/missing.py:make", "no such file"),
    ("def make(model):\n  pass\n", "{f}:build", "has no attribute 'build'"),
    ("make = 3\n", "{f}:make", "'make' in {f} is not callable (it is a int)"),
    ("import no_such_module_anywhere\n", "{f}:make", "importing {f} raised ModuleNotFoundError"),
    ("raise RuntimeError('boom\\nsecond line')\n", "{f}:make", "importing {f} raised RuntimeError: boom second line"),
    ("def make(model:\n", "{f}:make", "importing {f} raised SyntaxError"),
    (None, "{f}", "expected path/to/file.py:factory or package.module:factory"),
    (None, "{f}:not-a-name", "is not a Python name"),
    (None, "no_such_package_xyz.mod:make", "no module named 'no_such_package_xyz'"),
])
def test_load_errors_are_one_line(tmp_path, source, spec, message):
  f = tmp_path / "plugin.py"
  if source is not None:
    f.write_text(source)
  spec = spec.format(d=tmp_path, f=f)
  with pytest.raises(ValueError) as err:
    plugins.load_factory(spec, "method")
  text = str(err.value)
  assert "\n" not in text and text.startswith(f"method {spec!r}: ")
  assert message.format(f=os.path.realpath(f)) in text


@pytest.mark.parametrize("body,message", [
    ("  raise RuntimeError('bad factory')", "method factory '{spec}' raised RuntimeError: bad factory"),
    ("  return 42", "method factory 'plugin:make' returned a int, not an UnlearningMethod"),
])
def test_factory_that_fails_is_one_line_and_trains_nothing(tmp_path, body, message):
  f = tmp_path / "plugin.py"
  f.write_text(f"def make(model, lr: float = 0.1):\n{body}\n")
  spec = f"{f}:make"
  out_dir, cache = tmp_path / "out", tmp_path / "cache"
  _, err = _cli(["evaluate", "--config", "tiny", "--method", spec, "--num-models", "2", "--output-dir",
                 str(out_dir), "--cache-dir", str(cache), "--quiet"], expect_rc=2)
  assert message.format(spec=spec) in _error_line(err)
  assert not cache.exists() and not out_dir.exists()
  # the plugin's signature is its declaration: a bad value is refused before the factory runs
  _, err = _cli(["evaluate", "--config", "tiny", "--method", spec, "--hp", "lr=abc", "--num-models", "2",
                 "--output-dir", str(out_dir), "--cache-dir", str(cache)], expect_rc=2)
  assert "method 'plugin:make': hyperparameter 'lr' must be a finite number, got 'abc'" in _error_line(err)


def test_missing_method_and_model_files_fail_with_one_line(tmp_path):
  for flag in ("--method", "--model"):
    _, err = _cli(["evaluate", "--config", "tiny", flag, f"{tmp_path}/nope.py:make", "--output-dir",
                   str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")], expect_rc=2)
    assert f"{flag[2:]} '{tmp_path}/nope.py:make': no such file" in _error_line(err)
  assert not (tmp_path / "c").exists()


def test_methods_command_lists_a_plugin(capsys):
  assert cli.main(["methods", f"{EXAMPLE}:make"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith(f"# kl_finetune:make ({EXAMPLE}): 6 hyperparameter(s)")
  assert out[3].split()[:3] == ["kl_weight", "float", "1.0"]


# ------------------------------------------------------------------ end to end

TINY_MODEL = '''
import flax.linen as nn


class TwoLayer(nn.Module):
  num_classes: int
  hidden: int = {hidden}

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


def make(num_classes, conv_impl, dtype):
  del conv_impl, dtype
  return TwoLayer(num_classes)
'''


def _load_independently(path: pathlib.Path):
  """The example's ``make`` imported with plain importlib, as a user would in Python."""
  spec = importlib.util.spec_from_file_location("kl_finetune_for_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.make


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Three evaluations sharing one cache, all with a model from a file (trained once):

  ``file``: the example method through the CLI from its file; ``object``: the same factory
  imported separately and passed to ``unlearn_jax.evaluate``; ``edited``: an edited copy
  of the file (cross-entropy term halved, same name) through the CLI into ``file``'s
  output directory.
  """
  base = tmp_path_factory.mktemp("plugins")
  model = base / "my_model.py"
  model.write_text(TINY_MODEL.format(hidden=24))
  args = ["--config", "tiny", "--model", f"{model}:make", "--epochs", "2", "--num-models", str(N), "--hp",
          "epochs=1", "--cache-dir", str(base / "cache")]
  run_dir = str(base / "run")
  _cli(["evaluate", *args, "--method", f"{EXAMPLE}:make", "--output-dir", run_dir, "--quiet"])
  out = {"base": base, "model": model, "args": args, "file": load_results(run_dir)}
  out["object"] = unlearn_jax.evaluate("digits", _load_independently(EXAMPLE), N, hp={"epochs": 1}, config="tiny",
                                      model=f"{model}:make", recipe_overrides={"epochs": 2},
                                      cache_dir=str(base / "cache"), verbose=False)
  edited = base / "kl_finetune.py"
  text = EXAMPLE.read_text()
  assert "loss = cross_entropy(logits, y) +" in text
  edited.write_text(text.replace("loss = cross_entropy(logits, y) +", "loss = 0.5 * cross_entropy(logits, y) +"))
  _, out["edited_stderr"] = _cli(["evaluate", *args, "--method", f"{edited}:make", "--output-dir", run_dir])
  out["edited"] = load_results(run_dir)
  out["edited_sha"] = hashlib.sha256(edited.read_bytes()).hexdigest()
  return out


def test_method_from_file_is_recorded(runs):
  r = runs["file"]
  sha = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
  assert r["method"] == "kl_finetune" and r["hyperparameters"]["epochs"] == 1
  assert r["method_origin"] == {"spec": f"{EXAMPLE}:make", "name": "kl_finetune:make", "source": str(EXAMPLE),
                                "sha256": sha}
  assert r["unlearned"]["retain_accuracy"]["mean"] > 0.5  # it trained a working model
  with open(os.path.join(r["cache"]["unlearned"], "key.json")) as f:
    assert sha in f.read()


def test_method_from_file_equals_the_factory_passed_as_an_object(runs):
  a, b = runs["file"], runs["object"]
  assert b["cache"]["retrained"] == a["cache"]["retrained"] and b["method_origin"]["sha256"] == \
      a["method_origin"]["sha256"]
  for key in ("forgetting_quality", "final_score", "per_example_epsilons", "hyperparameters"):
    assert b[key] == a[key], key
  for split in ("retain_accuracy", "forget_accuracy", "test_accuracy"):
    assert b["unlearned"][split]["per_model"] == a["unlearned"][split]["per_model"]


def test_editing_the_method_file_invalidates_its_cache_entry(runs):
  before, after = runs["file"], runs["edited"]
  assert after["method_origin"]["sha256"] == runs["edited_sha"] != before["method_origin"]["sha256"]
  assert after["hyperparameters"] == before["hyperparameters"] and after["method"] == before["method"]
  assert after["cache"]["unlearned"] != before["cache"]["unlearned"]
  assert os.path.isdir(before["cache"]["unlearned"])  # the old entry is kept, not reused
  err = runs["edited_stderr"]
  assert f"[unlearn] {N} models from cache" not in err and f"[retrained] {N} models from cache" in err
  assert after["unlearned"]["retain_accuracy"]["per_model"] != before["unlearned"]["retain_accuracy"]["per_model"]


def test_model_from_file_is_used_recorded_and_keys_the_cache(runs):
  from unlearn_jax.commands.evaluate import resolve_config
  path, r = runs["model"], runs["file"]
  sha = hashlib.sha256(path.read_bytes()).hexdigest()
  assert r["model_origin"] == {"spec": f"{path}:make", "name": "my_model:make", "source": str(path), "sha256": sha}
  assert r["setup"]["model"] == f"my_model:make@{sha}"
  assert r["original"]["test_accuracy"] > 0.5  # the file's model learned digits
  with open(os.path.join(r["cache"]["retrained"], "key.json")) as f:
    assert f"my_model:make@{sha}" in f.read()

  def original_key():
    args = cli.build_parser().parse_args(["evaluate", *runs["args"], "--method", f"{EXAMPLE}:make"])
    ctx = build_context(from_dict(resolve_config(args)))
    return checkpoint.cache_key(ctx.key_parts("original"))

  assert r["cache"]["original"].endswith("original-" + original_key())
  try:  # an edited model file keys different original/retrained entries
    path.write_text(TINY_MODEL.format(hidden=25))
    assert not r["cache"]["original"].endswith("original-" + original_key())
    path.write_text("def make(num_classes, conv_impl, dtype):\n  return 'not a module'\n")
    base = runs["base"]
    _, err = _cli(["evaluate", "--config", "tiny", "--model", f"{path}:make", "--num-models", str(N),
                   "--cache-dir", str(base / "c2"), "--output-dir", str(base / "o2")], expect_rc=2)
    assert f"model factory '{path}:make' returned a str, not a flax.linen Module" in _error_line(err)
  finally:
    path.write_text(TINY_MODEL.format(hidden=24))


def test_library_entry_point_checks_its_arguments(tmp_path):
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['not_an_option'\]"):
    unlearn_jax.evaluate("digits", "finetune", 2, config="tiny", not_an_option=1)
  with pytest.raises(ValueError, match="key 'seed' must be an integer"):
    unlearn_jax.evaluate("digits", "finetune", 2, config="tiny", seed="zero")
  with pytest.raises(ValueError, match="method 'finetune': hyperparameter 'epochs'"):
    unlearn_jax.evaluate("digits", "finetune", 2, hp={"epochs": 0}, config="tiny", cache_dir=str(tmp_path / "c"))
  method = unlearn_jax.unlearning.get_method("none", None)
  with pytest.raises(ValueError, match="built UnlearningMethod; its hyperparameters are fixed"):
    unlearn_jax.evaluate("digits", method, 2, hp={"lr": 1.0}, config="tiny", cache_dir=str(tmp_path / "c"))
  assert not (tmp_path / "c").exists()
