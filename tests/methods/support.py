"""Helpers shared by the per-method tests (plain functions; the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.training import steps
from unlearn_jax.unlearning import toolkit


def ce(logits, y):
  """Mean cross-entropy, written out: −mean log softmax(logits)[y]."""
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def eval_ce(model, state, data, idx):
  """Mean eval-mode cross-entropy of ``state`` on the examples ``idx``."""
  x, y = data.gather(idx)
  return float(ce(steps.apply_eval(model, state.params, state.batch_stats, x), y))


def flat(tree):
  """``{leaf path: numpy array}`` of a parameter tree."""
  return {toolkit.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def run(method, state, data, seed=1):
  """One jitted unlearning run of ``method`` from ``state`` with key ``seed``."""
  return jax.jit(method.unlearn)(state, data, jax.random.key(seed))
