"""The seed axis: every strategy gives the same models as separate single-seed runs."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from tests.helpers import small_digits
from unlearn_jax import seeds
from unlearn_jax.models import get_model
from unlearn_jax.training import Recipe, make_train_fn

# Vmapped and looped programs may order float reductions differently (batched vs single
# matmuls), so trees are compared with this tolerance; on this CPU they agree to ~1e-7.
RTOL, ATOL = 1e-4, 1e-5

RECIPE = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine_epoch", epochs=2,
                batch_size=24, loss="weighted_ce", retrain_checkpoint="best_val", retrain_min_save_epoch=1)


@pytest.fixture(scope="module")
def setup():
  data = small_digits(n_retain=60, n_forget=12, n_val=16)
  model = get_model("tiny_cnn", 10, conv_impl="gemm")
  fn = make_train_fn(model, RECIPE, split="retain")
  keys = seeds.seed_keys(jax.random.key(7), 3)
  single = jax.jit(fn)
  separate = [single(keys[i], data) for i in range(3)]
  return data, fn, keys, separate


def _assert_tree_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("strategy,chunk", [("vmap", None), ("chunked", 2), ("loop", None), ("shard", None)])
def test_every_strategy_equals_separate_single_seed_runs(setup, strategy, chunk):
  data, fn, keys, separate = setup
  out = seeds.SeedRunner(fn, strategy, chunk)(keys, data)
  for i in range(3):
    _assert_tree_close(jax.tree.map(lambda x: x[i], out), separate[i])


def test_different_keys_give_different_models_and_batchnorm_statistics(setup):
  data, fn, keys, separate = setup
  out = seeds.SeedRunner(fn, "vmap")(keys, data)
  for leaf in jax.tree.leaves(out.params):
    assert not np.allclose(np.asarray(leaf[0]), np.asarray(leaf[1]))
  for leaf in jax.tree.leaves(out.batch_stats):  # per-seed statistics, never averaged across seeds
    assert not np.allclose(np.asarray(leaf[0]), np.asarray(leaf[1]))
    assert not np.allclose(np.asarray(leaf[1]), np.asarray(leaf[2]))


def test_seed_keys_do_not_depend_on_chunking():
  root = jax.random.key(3)
  all_keys = jax.random.key_data(seeds.seed_keys(root, 10))
  tail = jax.random.key_data(seeds.seed_keys(root, 4, start=6))
  np.testing.assert_array_equal(np.asarray(all_keys[6:]), np.asarray(tail))
  assert len({tuple(np.asarray(k).ravel()) for k in all_keys}) == 10


def test_chunked_runner_compiles_once_for_uneven_chunks(setup):
  data, fn, keys, _ = setup
  traces = []

  def counted(key, d):
    traces.append(1)
    return fn(key, d).best_epoch

  runner = seeds.SeedRunner(counted, "chunked", 2)
  runner(keys, data)  # chunks of 2 and 1 (padded to 2)
  runner(keys, data)
  assert len(traces) == 1
  assert [b for b in runner.chunk_bounds(5)] == [(0, 2), (2, 4), (4, 5)]


def test_iter_chunks_resumes_from_a_seed(setup):
  data, fn, keys, separate = setup
  chunks = list(seeds.SeedRunner(fn, "chunked", 1).iter_chunks(keys, data, start=2))
  assert [(lo, hi) for lo, hi, _ in chunks] == [(2, 3)]
  _assert_tree_close(jax.tree.map(lambda x: x[0], chunks[0][2]), separate[2])


def test_bad_strategy_arguments():
  with pytest.raises(ValueError, match="unknown seed strategy 'pmap'"):
    seeds.SeedRunner(lambda k: k, "pmap")
  with pytest.raises(ValueError, match="chunk_size must be >= 1"):
    seeds.SeedRunner(lambda k: k, "chunked", 0)
  for choice in ("auto", "tune"):  # a choice for unlearn_jax.tuning, not a program this module builds
    with pytest.raises(ValueError, match="tuning.plan_strategy"):
      seeds.SeedRunner(lambda k: k, choice)


SHARD_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from tests.helpers import small_digits
    from tests.test_seeds import RECIPE
    from unlearn_jax import seeds, tuning
    from unlearn_jax.models import get_model
    from unlearn_jax.training import make_train_fn
    assert jax.device_count() == 4, jax.devices()
    data = small_digits(n_retain=60, n_forget=12, n_val=16)
    fn = make_train_fn(get_model("tiny_cnn", 10, conv_impl="gemm"), RECIPE, split="retain")
    keys = seeds.seed_keys(jax.random.key(7), 3)
    sharded = seeds.SeedRunner(fn, "shard")(keys, data)
    sharded_leaf = seeds.SeedRunner(fn, "shard").run_chunk(seeds.seed_keys(jax.random.key(7), 4), data).best_epoch
    assert len(sharded_leaf.sharding.device_set) == 4, sharded_leaf.sharding
    looped = seeds.SeedRunner(fn, "loop")(keys, data)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(looped)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    auto = tuning.seed_runner(fn, "auto", model_name="tiny_cnn")  # several devices: auto shards over them
    per_device = tuning.DEFAULT_STRATEGY[("cpu", "small_conv")][1]
    assert (auto.strategy, auto.chunk_size) == ("shard", 4 * per_device), (auto.strategy, auto.chunk_size)
    for a, b in zip(jax.tree.leaves(auto(keys, data)), jax.tree.leaves(looped)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    print("OK", jax.device_count())
""")


@pytest.mark.slow  # ~25 s; the protocol sharded over four forced devices stays in the default run (test_pipeline_scale)
def test_shard_strategy_over_four_forced_host_devices_equals_loop():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "OK 4" in proc.stdout
