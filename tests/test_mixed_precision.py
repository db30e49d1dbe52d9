"""Mixed precision: bfloat16 compute with float32 parameters, statistics and loss.

``get_model(..., dtype=jnp.bfloat16)`` runs convolutions, matmuls and
activations in bfloat16 while parameters, BatchNorm running statistics, the
BatchNorm mean/variance reductions, the logits and the loss stay float32
(the usual mixed-precision recipe). Checked here: the compiled computation
really contains bfloat16 matmuls, every stored leaf stays float32, and on the
real digits data bf16 training reaches the fp32 accuracy within one point with
the same seeds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import cli, seeds
from unlearn_jax.data import SplitSpec, load_dataset, make_splits
from unlearn_jax.models import get_model
from unlearn_jax.training import (TrainState, accuracy, digits_recipe, init_variables, make_optimizer,
                                  make_predict_fn, make_train_fn, make_train_step)


def _dtypes(tree) -> set:
  return {x.dtype for x in jax.tree.leaves(tree)}


def _dot_operand_dtypes(fn, *args) -> set:
  """Operand dtypes of every dot_general in the jaxpr of ``fn(*args)`` (nested jaxprs included)."""
  found = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        found.add(tuple(str(v.aval.dtype) for v in eqn.invars))
      for sub in jax.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def _one_step(model_name, dtype, image_shape, key):
  model = get_model(model_name, 10, conv_impl="gemm", dtype=dtype)
  tx = make_optimizer(digits_recipe(), 10)
  params, stats = init_variables(model, key, image_shape)
  state = TrainState.create(params, stats, tx)
  step = make_train_step(model, tx, jnp.full((10,), 0.1))
  x = jax.random.normal(key, (8, *image_shape))
  y = jnp.arange(8) % 10
  return step, state, (x, y), key


def test_bf16_step_computes_in_bf16_and_stores_fp32(key):
  step, state, batch, k = _one_step("cnn", jnp.bfloat16, (8, 8, 1), key)
  dots = _dot_operand_dtypes(step, state, batch, k)
  assert ("bfloat16", "bfloat16") in dots, dots  # the convolutions' GEMMs run in bf16
  new_state, metrics = jax.jit(step)(state, batch, k)
  assert _dtypes(new_state.params) == {jnp.dtype(jnp.float32)}
  assert _dtypes(new_state.batch_stats) == {jnp.dtype(jnp.float32)}
  assert _dtypes(new_state.opt_state) <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}
  assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
  # The parameters moved, and the statistics were updated from the batch.
  assert not np.allclose(new_state.params["conv1"]["kernel"], state.params["conv1"]["kernel"])
  assert not np.allclose(new_state.batch_stats["bn1"]["mean"], state.batch_stats["bn1"]["mean"])


def test_fp32_default_has_no_bf16_matmuls(key):
  step, state, batch, k = _one_step("cnn", None, (8, 8, 1), key)
  dots = _dot_operand_dtypes(step, state, batch, k)
  assert dots and all(d == ("float32", "float32") for d in dots), dots


def test_resnet18_bf16_shapes_and_dtypes(key):
  # Abstract evaluation only: the competition network at 32x32 (max-pool with -inf
  # padding in bf16, residual adds, downsample branches) keeps float32 state.
  model = get_model("resnet18", 10, conv_impl="gemm", dtype=jnp.bfloat16)
  tx = make_optimizer(digits_recipe(), 10)

  def run(key):
    params, stats = init_variables(model, key, (32, 32, 3))
    state = TrainState.create(params, stats, tx)
    step = make_train_step(model, tx)
    x = jax.random.normal(key, (4, 32, 32, 3))
    return step(state, (x, jnp.arange(4)), key)

  new_state, metrics = jax.eval_shape(run, key)
  assert _dtypes(new_state.params) == {jnp.dtype(jnp.float32)}
  assert _dtypes(new_state.batch_stats) == {jnp.dtype(jnp.float32)}
  assert metrics["loss"].dtype == jnp.float32
  logits = jax.eval_shape(lambda p, s: model.apply({"params": p, "batch_stats": s}, jnp.zeros((2, 32, 32, 3)),
                                                   train=False), new_state.params, new_state.batch_stats)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def _train_accuracy(dtype, data, keys):
  model = get_model("cnn", data.num_classes, conv_impl="gemm", dtype=dtype)
  recipe = digits_recipe(epochs=8, min_save_epoch=4)
  result = seeds.SeedRunner(make_train_fn(model, recipe, split="train"), "vmap")(keys, data)
  predict = jax.vmap(make_predict_fn(model), in_axes=(0, 0, None, None))
  logits = jax.jit(predict)(result.params, result.batch_stats, data, data.test)
  acc = jax.vmap(accuracy, in_axes=(0, None))(logits, data.labels[data.test])
  return result, np.asarray(acc)


def test_bf16_training_matches_fp32_accuracy_on_digits():
  _, data = make_splits(load_dataset("digits"), SplitSpec(seed=0))
  keys = seeds.seed_keys(jax.random.key(0), 3)
  fp32, acc32 = _train_accuracy(None, data, keys)
  bf16, acc16 = _train_accuracy(jnp.bfloat16, data, keys)
  assert acc32.mean() > 0.9, acc32  # the comparison is between trained models
  assert abs(acc16.mean() - acc32.mean()) <= 0.01, (acc16, acc32)
  assert _dtypes(bf16.params) == {jnp.dtype(jnp.float32)}
  assert _dtypes(bf16.batch_stats) == {jnp.dtype(jnp.float32)}
  # Mixed precision really changed the computation: the trained weights differ.
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), fp32.params, bf16.params)
  assert max(jax.tree.leaves(diff)) > 1e-3


def test_train_command_accepts_bfloat16(capsys):
  assert cli.main(["train", "--dtype", "bfloat16", "--epochs", "1", "--num-models", "2",
                   "--strategy", "vmap"]) == 0
  out = capsys.readouterr().out
  assert "dtype=bfloat16" in out and "test accuracy" in out
