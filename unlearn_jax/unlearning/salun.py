"""``salun``: random-label unlearning restricted to salient weights (``docs/algorithms.md`` §6.9).

1. Mask at θ₀ in eval mode: g = Σ over forget batches (data order, remainder
   batch kept) of the batch-mean ∇θ[−CE(f_θ(x_f), y_f)]. |g| is ranked
   globally over every entry of every parameter (BatchNorm included) and m = 1
   on exactly ``int(N·ρ)`` top entries (ties by position, as a stable sort).
2. The SalUn-RL loop (:mod:`unlearn_jax.unlearning.random_label`, variant
   ``salun``) with the *final update* multiplied by m, so masked weights stay
   exactly at θ₀ (no decay, no momentum), as the current repository does.

Defaults: ρ 0.5, SGD 0.013 / 0.9 / 5e-4, 10 epochs, bs 256. Options:
``mask_scope`` (``global`` / ``per_layer``), ``mask_target`` (``update`` /
``gradient``, the repository's earlier behaviour), ``relabel``.

Source: Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based
Weight Saliency", ICLR 2024, arXiv 2310.12508; ``OPTML-Group/Unlearn-Saliency``
``Classification/generate_mask.py`` and ``Classification/unlearn/RL.py``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.unlearning import toolkit, random_label
from unlearn_jax.unlearning.base import ModelState, SetSizes, UnlearningMethod
from unlearn_jax.unlearning.hparams import HParam

SMALL_OVERRIDES = dict(epochs=1, batch_size=16)


def forget_gradient(model, original: ModelState, data, batch_size: int):
  """Σ over D_f's batches (data order, remainder kept) of the batch-mean ∇[−CE] at θ₀, eval mode."""
  neg_ce = toolkit.negated(toolkit.ce_loss(model, bn_train=False))
  grads, _ = toolkit.sum_gradients(neg_ce, original.params, original.batch_stats, data, data.forget, batch_size,
                                   key=None)
  return grads


def top_fraction_mask(values: jax.Array, rho: float) -> jax.Array:
  """0/1 (float32) on exactly ``int(values.size·ρ)`` largest entries of a flat array."""
  k = int(values.shape[0] * rho)
  order = jnp.argsort(-values, stable=True)
  return jnp.zeros(values.shape, jnp.float32).at[order[:k]].set(1.0)


def saliency_mask(grads, rho: float, scope: str = "global"):
  """The SalUn mask of a gradient pytree: top-ρ of |g| globally or within each leaf."""
  if scope == "per_layer":
    return jax.tree.map(lambda g: top_fraction_mask(jnp.abs(g).ravel(), rho).reshape(g.shape), grads)
  leaves, treedef = jax.tree.flatten(grads)
  flat = jnp.concatenate([jnp.abs(g).ravel() for g in leaves])
  mask = top_fraction_mask(flat, rho)
  return jax.tree.unflatten(treedef, toolkit.split_joint(mask, leaves, [True] * len(leaves)))

HPARAMS = (
    HParam("rho", "float", 0.5, low=0, high=1, low_open=True, high_open=True, doc="fraction of entries updated"),
    HParam("mask_scope", "str", "global", choices=("global", "per_layer"), doc="one ranking, or one per tensor"),
    HParam("mask_target", "str", "update", choices=("update", "gradient"), doc="mask the final update or the gradient"),
    HParam("mask_batch_size", "int", None, low=1, optional=True,
           doc="forget batch size of the saliency pass (None: batch_size)"),
    HParam("relabel", "str", "all", choices=("all", "others"), doc="random labels over all or the other classes"),
    HParam("lr", "float", 0.013, low=0, traceable=True, doc="SGD learning rate"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("epochs", "int", 10, low=1, doc="epochs"),
    HParam("batch_size", "int", 256, low=1, doc="batch size"),
)


def make(model, rho: float = 0.5, mask_scope: str = "global", mask_target: str = "update",
         mask_batch_size: Optional[int] = None, relabel: str = "all", lr: float = 0.013, momentum: float = 0.9,
         weight_decay: float = 5e-4, epochs: int = 10, batch_size: int = 256) -> UnlearningMethod:
  """SalUn.

  Args:
    rho: fraction of entries updated (the mask's density).
    mask_scope: ``global`` (one ranking over all entries) or ``per_layer``.
    mask_target: ``update`` (final-update masking) or ``gradient``.
    mask_batch_size: forget batch size of the saliency pass (default ``batch_size``).
    relabel, lr, momentum, weight_decay, epochs, batch_size: the SalUn-RL loop.
  """
  _validate.check_fraction("rho", rho)
  _validate.check_in("mask_scope", mask_scope, ("global", "per_layer"))
  _validate.check_in("mask_target", mask_target, ("update", "gradient"))
  mask_bs = mask_batch_size or batch_size
  _validate.check_positive_int("mask_batch_size", mask_bs)
  hp = random_label.resolve("salun", dict(relabel=relabel, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                          epochs=epochs, batch_size=batch_size))

  def mask_fn(original: ModelState, data):
    return saliency_mask(forget_gradient(model, original, data, mask_bs), rho, mask_scope)

  def cost(sizes: SetSizes) -> float:
    return random_label.cost(hp, sizes) + sizes.forget / sizes.retain

  return UnlearningMethod("salun", random_label.build_unlearn(model, hp, mask_fn, mask_target), cost,
                          "Fan et al. ICLR 2024 arXiv 2310.12508, OPTML-Group/Unlearn-Saliency",
                          dict(rho=rho, mask_scope=mask_scope, mask_target=mask_target, mask_batch_size=mask_bs,
                               **hp))
