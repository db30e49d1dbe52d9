"""The method contract, checked for every method in the registry.

Every registered factory is built with its reference hyperparameters plus the
module's ``SMALL_OVERRIDES`` (see :mod:`unlearn_jax.unlearning.base`) and run on
``tiny_mlp`` over a small digits subset. For each method:

* ``unlearn`` returns the original's tree structure, shapes and dtypes, finite;
* ``SeedRunner`` vmaps it over 2 seeds, and a second call with 2 new keys
  reuses the compiled program;
* different seeds give different models (``none`` returns the original exactly);
* the cost is a finite non-negative number of R-ep and the source is named.

For methods of different kinds (:data:`LOOP_CHECKED`) the jitted single-seed
``unlearn`` compiles once for two keys and its results equal the vmapped ones
up to floating-point reassociation (|Δ| ≤ 1e-4 + 1e-3·|x|, model and metrics).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import tiny_mlp_original
from unlearn_jax import seeds
from unlearn_jax.models import get_model
from unlearn_jax.unlearning import METHODS, SetSizes, UnlearnResult, get_method
from unlearn_jax.unlearning.base import small_overrides

RTOL, ATOL = 1e-3, 1e-4


@pytest.fixture(scope="module")
def setup():
  return tiny_mlp_original()


def _max_abs_diff(a, b) -> float:
  return max((float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))),
             default=0.0)


# Methods of different kinds whose vmapped runs are also compared with single-seed jitted runs:
# plain loop, max/min loop with a shared optimiser, masked update, key-initialised teacher,
# key-independent Fisher + per-seed noise, and the identity.
LOOP_CHECKED = ("finetune", "scrub", "salun", "bad_teacher", "fisher", "none")


@pytest.fixture(scope="module")
def vmapped_runs(setup):
  """Per method (memoised): its ``SeedRunner`` (vmap), the keys and the stacked results of two calls."""
  model, data, original = setup
  cache = {}

  def get(name):
    if name not in cache:
      factory = METHODS[name]
      method = get_method(name, model, **small_overrides(factory))
      runner = seeds.SeedRunner(lambda k, o, d: method.unlearn(o, d, k), strategy="vmap")
      keys = seeds.seed_keys(jax.random.key(3), 4)
      first = runner(keys[:2], original, data)
      second = runner(keys[2:], original, data)
      cache[name] = (method, runner, keys, first, second)
    return cache[name]

  return get


@pytest.mark.parametrize("name", list(METHODS))
def test_method_contract(name, setup, vmapped_runs):
  model, data, original = setup
  method, runner, keys, first, second = vmapped_runs(name)
  assert method.name == name
  cost = method.cost(SetSizes(retain=40_000, forget=1_000, validation=5_000))
  assert math.isfinite(cost) and cost >= 0
  assert method.source
  assert runner._programs[("vmap", 2)]._cache_size() == 1, "new keys recompiled the vmapped unlearn"

  results = [jax.tree.map(lambda x: x[i], out) for out in (first, second) for i in range(2)]
  for result in results:
    assert isinstance(result, UnlearnResult)
    assert jax.tree.structure(result.state) == jax.tree.structure(original)
    for got, want in zip(jax.tree.leaves(result.state), jax.tree.leaves(original)):
      assert got.shape == want.shape and got.dtype == want.dtype
      assert bool(jnp.all(jnp.isfinite(got)))
    for value in jax.tree.leaves(result.metrics):
      assert bool(jnp.all(jnp.isfinite(value)))
  assert jax.tree.structure(first.metrics) == jax.tree.structure(second.metrics)

  if name == "none":
    for result in results:
      assert _max_abs_diff(result.state, original) == 0.0
  else:
    for a, b in ((0, 1), (0, 2), (1, 3)):
      assert _max_abs_diff(results[a].state, results[b].state) > 1e-6, "two seeds gave the same model"


@pytest.mark.parametrize("name", LOOP_CHECKED)
def test_vmapped_equals_looped_and_jit_does_not_recompile(name, setup, vmapped_runs):
  model, data, original = setup
  method, _, keys, first, _ = vmapped_runs(name)
  single = jax.jit(method.unlearn)
  looped = [single(original, data, keys[i]) for i in range(2)]
  assert single._cache_size() == 1, "a new key recompiled the jitted unlearn"
  for i, result in enumerate(looped):
    one = jax.tree.map(lambda x: x[i], first)
    assert jax.tree.structure(one) == jax.tree.structure(result)
    for got, want in zip(jax.tree.leaves(one), jax.tree.leaves(result)):
      assert got.shape == want.shape and got.dtype == want.dtype
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL)


def test_registry_names_are_unique_and_factories_are_callable():
  assert len(set(METHODS)) == len(METHODS)
  assert {"none", "retrain", "finetune", "neggrad", "neggrad_plus", "scrub", "scrub_noise", "random_label",
          "bad_teacher", "l1_sparse", "salun", "fisher"} <= set(METHODS)
  with pytest.raises(ValueError, match="unknown method"):
    get_method("no_such_method", get_model("tiny_mlp", 10))


def test_methods_command_lists_every_method(capsys):
  from unlearn_jax.cli import main
  assert main(["methods"]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert "0.025" in out[0] and "0.125" in out[0] and "R-ep" in out[0]
  rows = {line.split()[0]: line.split(maxsplit=2) for line in out[2:]}
  assert set(rows) == set(METHODS)
  model = get_model("resnet18", 10)
  sizes = SetSizes(retain=40_000, forget=1_000, validation=5_000)
  for name, (_, cost, source) in rows.items():
    assert float(cost) == pytest.approx(METHODS[name](model).cost(sizes), abs=0.006)
    assert source == METHODS[name](model).source
  # Independent spot checks of the cost formulas at the competition ratio.
  assert float(rows["neggrad"][1]) == pytest.approx(5 * 0.025, abs=0.006)
  assert float(rows["l1_sparse"][1]) == pytest.approx(10.0)
  assert float(rows["random_label"][1]) == pytest.approx(10 * 1.025, abs=0.006)


@pytest.mark.parametrize("name", list(METHODS))
def test_method_runs_in_mixed_precision(name, setup):
  """With bfloat16 compute the method keeps float32 parameters and statistics and stays finite."""
  _, data, original = setup
  model = get_model("tiny_mlp", data.num_classes, dtype=jnp.bfloat16)
  method = get_method(name, model, **small_overrides(METHODS[name]))
  result = jax.jit(method.unlearn)(original, data, jax.random.key(5))
  for x, y in zip(jax.tree.leaves(result.state), jax.tree.leaves(original), strict=True):
    assert x.dtype == y.dtype == jnp.float32 and x.shape == y.shape
    assert bool(jnp.all(jnp.isfinite(x)))
  if name != "none":
    assert _max_abs_diff(result.state.params, original.params) > 0  # it did update the model
