"""Typed hyperparameter declarations (:mod:`unlearn_jax.unlearning.hparams`).

* every registered method declares exactly its factory's keywords, in order, with the
  factory's defaults, and every default passes its own declaration;
* ``check`` coerces what is safe (3 -> 3.0, 2.0 -> 2) and refuses with one line naming
  method, key and range: 1.5 or -1 epochs, batch size 0, bools as strings, NaN/inf, unknown
  choices; ``parse`` reads command-line text by kind;
* every hyperparameter declared ``traceable`` can be passed as a traced JAX scalar
  (``make`` and ``unlearn`` abstractly evaluated with it traced);
* factories without ``HPARAMS`` get declarations from their signatures.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import pytest

from tests.helpers import tiny_mlp_original
from unlearn_jax import plugins
from unlearn_jax.models import get_model
from unlearn_jax.unlearning import METHODS, UnlearningMethod, hparams
from unlearn_jax.unlearning.base import small_overrides
from unlearn_jax.unlearning.hparams import HParam


def _keywords(factory):
  return [p for p in list(inspect.signature(factory).parameters.values())[1:]
          if p.kind is not inspect.Parameter.VAR_KEYWORD]


@pytest.mark.parametrize("name", list(METHODS))
def test_declarations_match_the_factory_signature(name):
  factory = METHODS[name]
  decl = hparams.declared(METHODS[name])
  assert hparams.module_declarations(factory) is not None, f"{name} declares no HPARAMS"
  params = _keywords(factory)
  assert list(decl)[:len(params)] == [p.name for p in params]
  for p in params:
    default = None if p.default is inspect.Parameter.empty else p.default
    assert decl[p.name].default == default, (name, p.name)
    assert decl[p.name].check(name, default) == (tuple(default) if isinstance(default, (list, tuple)) else default)
    assert decl[p.name].optional == (default is None), (name, p.name)
  extra = list(decl)[len(params):]
  if extra:  # declared keywords taken through **kwargs must be accepted, and nothing else
    assert hparams.accepts_any_keyword(factory)
    model = get_model("tiny_mlp", 10)
    factory(model, **{k: decl[k].default for k in extra})
    with pytest.raises(ValueError):
      factory(model, not_a_hyperparameter=1)
  for h in decl.values():
    assert h.doc, (name, h.name)
    if h.traceable:
      assert h.kind == "float", (name, h.name)


@pytest.mark.parametrize("key,value", [("epochs", 1.5), ("epochs", -1), ("epochs", 0), ("batch_size", 0),
                                       ("epochs", "3"), ("epochs", True), ("lr", float("nan")),
                                       ("lr", float("inf")), ("lr", -0.1), ("lr", "0.1"), ("bn_train", "true"),
                                       ("bn_train", 1), ("preset", "nope"), ("schedule", 3)])
def test_bad_values_are_refused_with_method_key_and_range(key, value):
  with pytest.raises(ValueError) as err:
    hparams.validate("finetune", METHODS["finetune"], {key: value})
  msg = str(err.value)
  assert "\n" not in msg and "'finetune'" in msg and repr(key) in msg and "must be" in msg
  h = hparams.declared(METHODS["finetune"])[key]
  assert h.range_text() in msg


def test_coercion_and_ranges():
  decl = hparams.declared(METHODS["bad_teacher"])
  assert hparams.validate("bad_teacher", METHODS["bad_teacher"],
                          {"lr": 3, "epochs": 2.0, "kl_reduction": "batchmean"}) == \
      {"lr": 3.0, "epochs": 2, "kl_reduction": "batchmean"}
  assert type(hparams.validate("bad_teacher", METHODS["bad_teacher"], {"epochs": 2.0})["epochs"]) is int
  frac = decl["retain_frac"]  # open interval (0, 1)
  for bad in (0, 1, 1.5, -0.2):
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
      frac.check("bad_teacher", bad)
  assert frac.check("bad_teacher", 0.999) == 0.999
  mom = hparams.declared(METHODS["neggrad"])["momentum"]  # closed interval [0, 1]
  assert mom.check("neggrad", 0) == 0.0 and mom.check("neggrad", 1) == 1.0
  assert hparams.declared(METHODS["finetune"])["bn_train"].check("finetune", False) is False
  assert hparams.declared(METHODS["finetune"])["lr"].check("finetune", None) is None  # optional: the preset's value
  with pytest.raises(ValueError, match=">= 0, got None"):
    hparams.declared(METHODS["neggrad"])["lr"].check("neggrad", None)
  seq = hparams.declared(METHODS["scrub"])["decay_epochs"]
  assert seq.check("scrub", [3, 5.0]) == (3, 5)
  for bad in ([3, 1.5], [-1], 3, "3,5"):
    with pytest.raises(ValueError, match="decay_epochs"):
      seq.check("scrub", bad)


def test_unknown_key_lists_the_valid_ones():
  with pytest.raises(ValueError) as err:
    hparams.validate("neggrad", METHODS["neggrad"], {"learning_rate": 0.1})
  assert str(err.value) == ("method 'neggrad' has no hyperparameter 'learning_rate'; valid keys: lr, epochs, "
                            "batch_size, momentum, weight_decay, bn_train")
  with pytest.raises(ValueError, match="unknown method 'no_such_method'"):
    plugins.resolve_method("no_such_method")
  with pytest.raises(ValueError, match=r"expected a method factory, got 'neggrad' \(a registered method's factory"):
    hparams.declared("neggrad")  # names are resolved by the registry, not by the declarations


def test_parse_reads_command_line_text_by_kind():
  decl = hparams.declared(METHODS["finetune"])
  assert decl["lr"].parse("1e-3") == 1e-3 and decl["epochs"].parse("3") == 3
  assert decl["bn_train"].parse("false") is False and decl["bn_train"].parse("Yes") is True
  assert decl["schedule"].parse("constant") == "constant" and decl["lr"].parse("null") is None
  assert hparams.declared(METHODS["scrub"])["decay_epochs"].parse("[3, 5]") == [3, 5]
  assert hparams.declared(METHODS["scrub"])["decay_epochs"].parse("3,5") == [3, 5]
  assert hparams.parse_overrides("finetune", METHODS["finetune"],
                                 {"epochs": "2", "bn_train": "no", "preset": "kaggle"}) == \
      {"epochs": 2, "bn_train": False, "preset": "kaggle"}
  with pytest.raises(ValueError, match="'epochs' must be an integer >= 1"):
    hparams.parse_overrides("finetune", METHODS["finetune"], {"epochs": "1.5"})
  with pytest.raises(ValueError, match="'bn_train' must be true or false"):
    hparams.parse_overrides("finetune", METHODS["finetune"], {"bn_train": "maybe"})


def test_range_text():
  assert HParam("a", "int", 1, low=1).range_text() == "an integer >= 1"
  assert HParam("a", "float", 0.5, low=0, high=1, low_open=True).range_text() == "a finite number in (0, 1]"
  assert HParam("a", "float", 1.0, high=2, high_open=True).range_text() == "a finite number < 2"
  assert HParam("a", "str", "x", choices=("x", "y"), optional=True).range_text() == "one of 'x', 'y' (or null)"
  assert HParam("a", "floats", (), low=0).range_text() == "a list of numbers, each >= 0"
  with pytest.raises(ValueError, match="unknown kind"):
    HParam("a", "complex", 0)


@pytest.fixture(scope="module")
def setup():
  return tiny_mlp_original()


@pytest.mark.parametrize("name", [n for n, f in METHODS.items()
                                  if any(h.traceable for h in hparams.declared(f).values())])
def test_traceable_hyperparameters_accept_traced_scalars(name, setup):
  model, data, original = setup
  factory = METHODS[name]
  traced = [h for h in hparams.declared(METHODS[name]).values() if h.traceable]
  values = jnp.asarray([h.default if h.default is not None else 0.5 for h in traced], jnp.float32)

  def run(vals):
    hp = dict(small_overrides(factory), **{h.name: vals[i] for i, h in enumerate(traced)})
    return factory(model, **hp).unlearn(original, data, jax.random.key(0)).state

  out = jax.eval_shape(run, values)  # a Python branch on a traced value would raise here
  assert jax.tree.structure(out) == jax.tree.structure(original)


def test_vmapped_learning_rate_equals_separate_builds(setup):
  """A traced learning rate is the same computation as the concrete one (finetune)."""
  model, data, original = setup
  lrs = jnp.asarray([0.01, 0.2], jnp.float32)
  key = jax.random.key(4)
  small = small_overrides(METHODS["finetune"])
  batched = jax.jit(jax.vmap(lambda lr: METHODS["finetune"](model, lr=lr, **small).unlearn(original, data, key)
                             .state.params))(lrs)
  one = jax.jit(METHODS["finetune"](model, lr=0.2, **small).unlearn)(original, data, key).state.params
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched)):
    assert jnp.allclose(a, b[1], rtol=1e-4, atol=1e-5)
    assert not jnp.allclose(b[0], b[1])


def test_signature_derived_declarations():
  def make(model, lr: float = 0.1, epochs: int = 2, mode="a", flag: bool = False, extra=None, **rest):
    del model, rest
    return UnlearningMethod("mine", lambda o, d, k: None, lambda s: 0.0, "", {})

  decl = hparams.declared(make)
  assert [(h.name, h.kind, h.default) for h in decl.values()] == [
      ("lr", "float", 0.1), ("epochs", "int", 2), ("mode", "str", "a"), ("flag", "bool", False),
      ("extra", "any", None)]
  assert hparams.validate("mine", make, {"lr": 1, "anything": [1]}) == {"lr": 1.0, "anything": [1]}
  with pytest.raises(ValueError, match="'epochs' must be an integer"):
    hparams.validate("mine", make, {"epochs": 0.5})

  def strict(model, lr: float = 0.1):
    del model, lr

  with pytest.raises(ValueError, match="valid keys: lr"):
    hparams.validate("strict", strict, {"epochs": 1})
  assert not math.isnan(hparams.validate("strict", strict, {"lr": 2})["lr"])


def _cli(args):
  import contextlib
  import io
  from unlearn_jax import cli
  err, out = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    rc = cli.main(args)
  return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("hp,message", [
    ("epochs=1.5", "method 'finetune': hyperparameter 'epochs' must be an integer >= 1 (or null), got 1.5"),
    ("epochs=-1", "method 'finetune': hyperparameter 'epochs' must be an integer >= 1 (or null), got -1"),
    ("batch_size=0", "method 'finetune': hyperparameter 'batch_size' must be an integer >= 1 (or null), got 0"),
    ("lr=.nan", "method 'finetune': hyperparameter 'lr' must be a finite number >= 0 (or null), got nan"),
    ("schedule=linear", "hyperparameter 'schedule' must be one of 'constant', 'cosine_epoch'"),
])
def test_cli_refuses_bad_values_before_training(tmp_path, hp, message):
  out_dir, cache = tmp_path / "out", tmp_path / "cache"
  rc, _, err = _cli(["evaluate", "--config", "tiny", "--hp", hp, "--num-models", "2", "--output-dir", str(out_dir),
                     "--cache-dir", str(cache)])
  lines = err.strip().splitlines()
  assert rc == 2 and len(lines) == 1
  assert lines[0].startswith("unlearn-jax: error: method 'finetune': hyperparameter") and message in lines[0]
  assert not cache.exists() and not out_dir.exists()  # nothing trained, nothing written


def test_methods_command_lists_hyperparameters():
  rc, out, _ = _cli(["methods", "bad_teacher"])
  lines = out.strip().splitlines()
  assert rc == 0 and lines[0].startswith("# bad_teacher: 7 hyperparameter(s)")
  assert lines[1].split() == ["name", "type", "default", "valid", "values", "description"]
  rows = {line.split()[0]: line for line in lines[2:]}
  assert list(rows) == list(hparams.declared(METHODS["bad_teacher"]))
  assert "retain_frac" in rows and "float" in rows["retain_frac"] and "0.3" in rows["retain_frac"]
  assert "a finite number in (0, 1)" in rows["retain_frac"]
  assert "one of 'mean', 'batchmean'" in rows["kl_reduction"]
  rc, out, _ = _cli(["methods", "finetune"])  # null defaults show the preset's value
  row = next(line for line in out.splitlines() if line.startswith("lr "))
  assert "0.1 (preset)" in row and "[traceable]" in row
  rc, _, err = _cli(["methods", "no_such_method"])
  assert rc == 2 and err.startswith("unlearn-jax: error: unknown method 'no_such_method'")
