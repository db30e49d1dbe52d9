"""``fisher``: Fisher forgetting, Gaussian noise scaled by the inverse retain Fisher (``docs/algorithms.md`` §6.10).

No gradient steps:

1. Diagonal Fisher at θ₀ in eval mode with the model's own predictive
   distribution, F_j = (1/N_b) Σ_batches Σ_y p̄_y·(∂CE_batch(y)/∂θ_j)², where a
   batch has ``fisher_batch`` examples, CE_batch(y) is its mean CE against label
   y and p̄_y its mean predicted probability of y. ``fisher_batch=1`` is the
   exact per-example Fisher (1/N) Σ_x Σ_y p(y|x)(∂CE(x, y)/∂θ_j)² of the SCRUB
   notebook; larger batches are Unlearn-Sparse's batched ``fisher_new``.
   Per-batch gradients for all C labels are vmapped, ``chunk`` batches at a time.
2. v = α·min(1/(F + 1e-8), 1e3), the cap 1e2 for tensors whose leading torch
   dimension equals the number of classes (the classifier's weight and bias).
3. For ndim > 1, v is averaged over the torch input-channel axis (dim 1: Flax
   conv axis 2, Dense axis 0) and broadcast back.
4. v × 10 for the classifier tensors and every 1-D tensor (BN, biases).
5. θ = θ₀ + √v ⊙ ε with ε ~ N(0, I) from the seed key; BN statistics unchanged.

The Fisher does not depend on the key, so under a vmap over seeds it is
computed once. ``subsample`` uses ``subsample`` evenly spaced retain examples
(deterministic, hence shared by all seeds). The notebook's class-forgetting
branch (zero mean for the forgotten class) does not apply to random forgetting
and is not implemented.

Defaults: α 1e-7 (the large-scale notebook; the function default is 3e-6).

Source: Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020,
arXiv 1911.04933; ``meghdadk/SCRUB`` ``large_scale_unlearning.ipynb``;
``OPTML-Group/Unlearn-Sparse`` ``unlearn/fisher.py``.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.training import losses, steps
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, SetSizes, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

SMALL_OVERRIDES = dict(chunk=4)


def fisher_indices(retain: jax.Array, subsample: Optional[int]) -> jax.Array:
  """All retain indices, or ``subsample`` of them evenly spaced."""
  n = retain.shape[0]
  if subsample is None or subsample >= n:
    return retain
  return retain[(jnp.arange(subsample) * n) // subsample]


def fisher_diagonal(model, state: ModelState, data, indices: jax.Array, fisher_batch: int = 1, chunk: int = 16):
  """The diagonal Fisher (a pytree like the params) at ``state`` over ``indices``, eval mode.

  The last batch is padded and its padding masked out of both the batch-mean
  loss and the mean probability.
  """
  n = indices.shape[0]
  nb = math.ceil(n / fisher_batch)
  n_chunks = math.ceil(nb / chunk)
  total = n_chunks * chunk * fisher_batch
  idx = jnp.concatenate([indices, jnp.broadcast_to(indices[:1], (total - n,))])
  valid = (jnp.arange(total) < n).astype(jnp.float32)
  idx = idx.reshape(n_chunks, chunk, fisher_batch)
  valid = valid.reshape(n_chunks, chunk, fisher_batch)
  num_classes = data.num_classes

  def batch_term(b_idx, b_valid):
    x, _ = data.gather(b_idx)
    count = jnp.maximum(b_valid.sum(), 1.0)

    def loss_y(params, y):
      logits = steps.apply_eval(model, params, state.batch_stats, x)
      ce = losses.per_example_cross_entropy(logits, jnp.full((x.shape[0],), y, jnp.int32))
      return (ce * b_valid).sum() / count, logits

    grads, logits = jax.vmap(lambda y: jax.grad(loss_y, has_aux=True)(state.params, y))(jnp.arange(num_classes))
    probs = (jax.nn.softmax(logits[0].astype(jnp.float32), -1) * b_valid[:, None]).sum(0) / count
    weight = probs * (b_valid.sum() > 0)
    return jax.tree.map(lambda g: jnp.tensordot(weight, jnp.square(g), axes=1), grads)

  def body(acc, xs):
    c_idx, c_valid = xs
    terms = jax.vmap(batch_term)(c_idx, c_valid)
    return jax.tree.map(lambda a, t: a + t.sum(0), acc, terms), None

  acc0 = jax.tree.map(jnp.zeros_like, state.params)
  acc, _ = jax.lax.scan(body, acc0, (idx, valid))
  return jax.tree.map(lambda a: a / nb, acc)


def is_classifier(leaf: jax.Array, num_classes: int) -> bool:
  """torch's ``p.size(0) == num_classes``: the last Flax axis (torch's output dim) equals the class count."""
  return leaf.shape[-1] == num_classes


def noise_variance(fisher, num_classes: int, alpha: float):
  """v per leaf from the diagonal Fisher (steps 2–4 of the module docstring)."""

  def one(f):
    cls = is_classifier(f, num_classes)
    v = jnp.minimum(1.0 / (f + 1e-8), 1e2 if cls else 1e3) * alpha
    if f.ndim > 1:
      axis = 2 if f.ndim == 4 else 0
      v = jnp.broadcast_to(v.mean(axis=axis, keepdims=True), f.shape)
    if cls or f.ndim == 1:
      v = v * 10.0
    return v

  return jax.tree.map(one, fisher)

HPARAMS = (
    HParam("alpha", "float", 1e-7, low=0, low_open=True, doc="noise scale α"),
    HParam("fisher_batch", "int", 1, low=1, doc="examples per Fisher batch (1: exact per-example Fisher)"),
    HParam("subsample", "int", None, low=1, optional=True, doc="retain examples used for the Fisher (None: all)"),
    HParam("chunk", "int", 16, low=1, doc="Fisher batches processed together (memory/speed only)"),
)


def make(model, alpha: float = 1e-7, fisher_batch: int = 1, subsample: Optional[int] = None,
         chunk: int = 16) -> UnlearningMethod:
  """Fisher forgetting.

  Args:
    alpha: noise scale α.
    fisher_batch: examples per Fisher batch (1 = exact per-example Fisher).
    subsample: number of retain examples used for the Fisher (None: all).
    chunk: Fisher batches processed together (memory/speed trade-off only).
  """
  if alpha <= 0:
    raise ValueError(f"alpha must be positive, got {alpha}")
  _validate.check_positive_int("fisher_batch", fisher_batch)
  _validate.check_positive_int("chunk", chunk)
  if subsample is not None:
    _validate.check_positive_int("subsample", subsample)
  num_classes_ = getattr(model, "num_classes", 10)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    fisher = fisher_diagonal(model, original, data, fisher_indices(data.retain, subsample), fisher_batch, chunk)
    var = noise_variance(fisher, data.num_classes, alpha)
    params = jax.tree.map(lambda p, v, k: p + jnp.sqrt(v) * jax.random.normal(k, p.shape, p.dtype),
                          original.params, var, toolkit.keys_like(key, original.params))
    mean_var = sum(v.sum() for v in jax.tree.leaves(var)) / sum(v.size for v in jax.tree.leaves(var))
    return UnlearnResult(ModelState(params, original.batch_stats), {"mean_variance": mean_var})

  def cost(sizes: SetSizes) -> float:
    used = sizes.retain if subsample is None else min(subsample, sizes.retain)
    return num_classes_ * used / sizes.retain

  return UnlearningMethod("fisher", unlearn, cost,
                          "Golatkar et al. CVPR 2020 arXiv 1911.04933, meghdadk/SCRUB large_scale_unlearning.ipynb; "
                          "OPTML-Group/Unlearn-Sparse unlearn/fisher.py",
                          dict(alpha=alpha, fisher_batch=fisher_batch, subsample=subsample, chunk=chunk))
