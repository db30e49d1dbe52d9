"""``random_label``: fit D_f to random labels while keeping D_r's labels (``docs/algorithms.md`` §6.6).

Cross-entropy on both sets, the student in train mode. Two reference variants
(``variant``), each field overridable:

* ``salun`` (default; SalUn's RL baseline): every epoch is one pass over D_f
  with labels uniform over *all* classes redrawn every batch, then one pass
  over D_r with the true labels; SGD 0.013 / 0.9 / 5e-4, bs 256, 10 epochs.
* ``bad-teacher-repo``: labels drawn once, uniform over the *other* classes;
  training on the shuffled union of D_f and D_r; Adam 1e-4, 3 epochs, bs 256.

Options: ``relabel`` (``all`` / ``others``), ``redraw`` (``batch`` / ``once``),
``order`` (``sequential`` = forget-then-retain / ``union``), optimiser fields.

Sources: Graves et al., "Amnesiac Machine Learning", arXiv 2010.10981;
``OPTML-Group/Unlearn-Saliency`` ``Classification/unlearn/RL.py`` (Fan et
al., arXiv 2310.12508); ``vikram2000b/bad-teaching-unlearning``
``CIFARSuper20_Rocket_Unlearn.ipynb`` (Chundawat et al., arXiv 2205.08096).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.training import losses, steps
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, SetSizes, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

VARIANTS = {
    "salun": dict(relabel="all", redraw="batch", order="sequential", optimizer="sgd", lr=0.013, momentum=0.9,
                  weight_decay=5e-4, epochs=10, batch_size=256),
    "bad-teacher-repo": dict(relabel="others", redraw="once", order="union", optimizer="adam", lr=1e-4,
                             momentum=0.9, weight_decay=0.0, epochs=3, batch_size=256),
}
SMALL_OVERRIDES = dict(epochs=1, batch_size=16)
LABEL_STREAM, ORDER_STREAM, STEP_STREAM = 0, 1, 2


def resolve(variant: str, overrides: dict) -> dict:
  """The variant's hyperparameters with the non-``None`` ``overrides`` applied, validated."""
  hp = toolkit.resolve_preset("random_label variant", VARIANTS, variant, overrides)
  _validate.check_in("relabel", hp["relabel"], ("all", "others"))
  _validate.check_in("redraw", hp["redraw"], ("batch", "once"))
  _validate.check_in("order", hp["order"], ("sequential", "union"))
  _validate.check_in("optimizer", hp["optimizer"], ("sgd", "adam"))
  _validate.check_positive_int("epochs", hp["epochs"])
  _validate.check_positive_int("batch_size", hp["batch_size"])
  return hp


def random_labels(key: jax.Array, labels: jax.Array, num_classes: int, relabel: str) -> jax.Array:
  """Uniform labels over all classes (``all``) or over the classes other than ``labels`` (``others``)."""
  if relabel == "all":
    return jax.random.randint(key, labels.shape, 0, num_classes, labels.dtype)
  shift = jax.random.randint(key, labels.shape, 1, num_classes, labels.dtype)
  return (labels + shift) % num_classes


def build_unlearn(model, hp: dict,
                  mask_fn: Optional[Callable[[ModelState, object], object]] = None, mask_target: str = "update"):
  """The relabelling loop as ``unlearn(original, data, key)``.

  ``mask_fn(original, data)`` (SalUn) gives a 0/1 pytree like the params that
  multiplies the final update (``mask_target='update'``) or the gradient
  (``'gradient'``).
  """

  def loss_fn(params, batch_stats, batch, key):
    (idx, is_forget, fixed), data = batch
    x, y = data.gather(idx)
    new = random_labels(key, y, data.num_classes, hp["relabel"]) if hp["redraw"] == "batch" else fixed
    target = jnp.where(is_forget, new, y)
    logits, stats = steps.apply_train(model, params, batch_stats, x)
    return losses.cross_entropy(logits, target), (stats, {})

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    tx = torch_optimizer(hp["optimizer"], hp["lr"], hp["momentum"], hp["weight_decay"])
    mask = mask_fn(original, data) if mask_fn is not None else None
    inner = toolkit.make_step(loss_fn, tx, update_mask=mask if mask_target == "update" else None,
                              grad_scale=mask if mask_target == "gradient" else None)
    step = lambda state, batch, k: inner(state, (batch, data), k)
    n_f, n_r = data.forget.shape[0], data.retain.shape[0]
    y_f = data.labels[data.forget]
    fixed = random_labels(jax.random.fold_in(key, LABEL_STREAM), y_f, data.num_classes, hp["relabel"])
    forget_ex = (data.forget, jnp.ones((n_f,), bool), fixed)
    retain_ex = (data.retain, jnp.zeros((n_r,), bool), jnp.zeros((n_r,), y_f.dtype))
    order_key, step_key = jax.random.fold_in(key, ORDER_STREAM), jax.random.fold_in(key, STEP_STREAM)
    take = lambda ex, order: jax.tree.map(lambda a: a[order], ex)

    def epoch(state, e):
      ek = jax.random.fold_in(step_key, e)
      if hp["order"] == "union":
        union = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), forget_ex, retain_ex)
        order = toolkit.epoch_order(order_key, e, n_f + n_r)
        state, loss = toolkit.run_batches(step, state, take(union, order), hp["batch_size"], ek)
        return state, dict(loss=loss)
      f_order = toolkit.epoch_order(jax.random.fold_in(order_key, 0), e, n_f)
      r_order = toolkit.epoch_order(jax.random.fold_in(order_key, 1), e, n_r)
      state, f_loss = toolkit.run_batches(step, state, take(forget_ex, f_order), hp["batch_size"],
                                          jax.random.fold_in(ek, 0))
      state, r_loss = toolkit.run_batches(step, state, take(retain_ex, r_order), hp["batch_size"],
                                          jax.random.fold_in(ek, 1))
      return state, dict(loss=r_loss, forget_loss=f_loss)

    state, metrics = jax.lax.scan(epoch, toolkit.start(original, tx), jnp.arange(hp["epochs"]))
    return UnlearnResult(toolkit.finish(state), metrics)

  return unlearn


def cost(hp: dict, sizes: SetSizes) -> float:
  """E passes over D_r and D_f."""
  return hp["epochs"] * (1.0 + sizes.forget / sizes.retain)

HPARAMS = (
    HParam("variant", "str", "salun", choices=tuple(VARIANTS), doc="reference setting the other fields default to"),
    HParam("relabel", "str", None, choices=("all", "others"), optional=True,
           doc="random labels over all classes or the other classes (None: the preset's value)"),
    HParam("redraw", "str", None, choices=("batch", "once"), optional=True,
           doc="labels redrawn per batch or once (None: the preset's value)"),
    HParam("order", "str", None, choices=("sequential", "union"), optional=True,
           doc="forget-then-retain epochs or one shuffled union (None: the preset's value)"),
    HParam("optimizer", "str", None, choices=("sgd", "adam"), optional=True,
           doc="optimiser (None: the preset's value)"),
    HParam("lr", "float", None, low=0, optional=True, traceable=True, doc="learning rate (None: the preset's value)"),
    HParam("momentum", "float", None, low=0, high=1, optional=True, doc="SGD momentum (None: the preset's value)"),
    HParam("weight_decay", "float", None, low=0, optional=True, doc="coupled L2 decay (None: the preset's value)"),
    HParam("epochs", "int", None, low=1, optional=True, doc="epochs (None: the preset's value)"),
    HParam("batch_size", "int", None, low=1, optional=True, doc="batch size (None: the preset's value)"),
)


def make(model, variant: str = "salun", relabel: Optional[str] = None, redraw: Optional[str] = None,
         order: Optional[str] = None, optimizer: Optional[str] = None, lr: Optional[float] = None,
         momentum: Optional[float] = None, weight_decay: Optional[float] = None, epochs: Optional[int] = None,
         batch_size: Optional[int] = None) -> UnlearningMethod:
  """Random-label unlearning; ``None`` fields take the variant's value."""
  hp = resolve(variant, dict(relabel=relabel, redraw=redraw, order=order, optimizer=optimizer, lr=lr,
                             momentum=momentum, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size))
  return UnlearningMethod("random_label", build_unlearn(model, hp), lambda s: cost(hp, s),
                          "Graves et al. arXiv 2010.10981; OPTML-Group/Unlearn-Saliency unlearn/RL.py; "
                          "vikram2000b/bad-teaching-unlearning", dict(variant=variant, **hp))
