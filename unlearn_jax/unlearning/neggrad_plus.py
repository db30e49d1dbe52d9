"""``neggrad_plus``: joint descent on retain and ascent on forget, ``docs/algorithms.md`` §6.3.

Each retain batch is paired with the next forget batch as the source's
``zip(retain_loader, itertools.cycle(forget_loader))`` pairs them: every epoch
draws a fresh shuffle of D_f, cuts it into batches (the last one short when
``forget_batch_size`` does not divide |D_f|), and ``cycle`` replays exactly
those batches, in that order and short batch included, once they run out
(:func:`cycle_pairs`). One step minimises

    L = β·[CE(f_θ(x_r), y_r) + (λ/2)‖θ − θ₀‖²] − (1 − β)·CE(f_θ(x_f), y_f),

with the retain forward first and the forget forward second (in train mode the
BatchNorm statistics are threaded through both passes in that order). An epoch
is one pass over D_r.

Presets:

* ``small-scale`` (default): β 0.95, 10 epochs, plain SGD 0.01, wd 0, λ 0.1
  (the training weight decay of the small-scale setting), BN eval, bs retain/forget
  128/64 (the small-scale notebook's loaders);
* ``MIA``: β 0.9999, 5 epochs, plain SGD 0.01, wd 0, λ 0, BN train, bs 32/16;
* ``deepunlearn``: β 0.95, SGD 0.01 momentum 0.9, 10 epochs, bs 256/256, BN
  eval, λ tied to its wd (default 0).

Sources: Kurmanji et al., "Towards Unbounded Machine Unlearning", arXiv
2302.09880, repository ``meghdadk/SCRUB`` (small-scale and MIA notebooks);
``xcadet/deepunlearn`` ``munl/unlearning/neggradplus.py`` (arXiv 2410.01276).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.training import losses
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, SetSizes, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

PRESETS = {
    "small-scale": dict(beta=0.95, epochs=10, lr=0.01, momentum=0.0, weight_decay=0.0, l2_init=0.1,
                        bn_train=False, batch_size=128, forget_batch_size=64),
    "MIA": dict(beta=0.9999, epochs=5, lr=0.01, momentum=0.0, weight_decay=0.0, l2_init=0.0,
                bn_train=True, batch_size=32, forget_batch_size=16),
    "deepunlearn": dict(beta=0.95, epochs=10, lr=0.01, momentum=0.9, weight_decay=0.0, l2_init=0.0,
                        bn_train=False, batch_size=256, forget_batch_size=256),
}

SMALL_OVERRIDES = dict(epochs=1, batch_size=16, forget_batch_size=8)

RETAIN_STREAM, FORGET_STREAM = 0, 1

HPARAMS = (
    HParam("preset", "str", "small-scale", choices=tuple(PRESETS), doc="reference setting the other fields default to"),
    HParam("beta", "float", None, low=0, high=1, optional=True,
           doc="retain weight β; forget weight 1 − β (None: the preset's value)"),
    HParam("epochs", "int", None, low=1, optional=True, doc="passes over D_r (None: the preset's value)"),
    HParam("lr", "float", None, low=0, optional=True, traceable=True,
           doc="SGD learning rate (None: the preset's value)"),
    HParam("momentum", "float", None, low=0, high=1, optional=True, doc="SGD momentum (None: the preset's value)"),
    HParam("weight_decay", "float", None, low=0, optional=True, doc="coupled L2 decay (None: the preset's value)"),
    HParam("l2_init", "float", None, low=0, optional=True,
           doc="λ of (λ/2)‖θ − θ₀‖² in the retain term (None: the preset's value)"),
    HParam("bn_train", "bool", None, optional=True, doc="student BatchNorm in train mode (None: the preset's value)"),
    HParam("batch_size", "int", None, low=1, optional=True, doc="retain batch size (None: the preset's value)"),
    HParam("forget_batch_size", "int", None, low=1, optional=True, doc="forget batch size (None: the preset's value)"),
)


def cycle_pairs(step, state, r_order: jax.Array, f_order: jax.Array, batch_size: int, forget_batch_size: int,
                key: jax.Array):
  """One pass of ``zip(retain batches, itertools.cycle(forget batches))``; returns ``(state, mean loss)``.

  ``r_order`` / ``f_order``: the epoch's visiting orders (dataset indices). Both
  are cut into batches as a torch loader with ``drop_last=False`` cuts them;
  retain batch ``s`` is paired with forget batch ``s mod L`` (``L`` forget
  batches, the last one short if ``forget_batch_size`` does not divide
  ``len(f_order)``). ``step(state, (r_idx, f_idx), key)`` sees every pair with its
  exact shapes: full forget batches run in a ``lax.scan``, each short one as its
  own step between them. The mean loss weights each step by its retain batch size.
  """
  n_r, n_f = r_order.shape[0], f_order.shape[0]
  nb_r, rem_r = divmod(n_r, batch_size)
  full_f, rem_f = divmod(n_f, forget_batch_size)
  cycle_len = full_f + (1 if rem_f else 0)
  n_steps = nb_r + (1 if rem_r else 0)
  keys = jax.random.split(key, n_steps)
  f_full = f_order[: full_f * forget_batch_size].reshape(full_f, forget_batch_size)
  f_short = f_order[full_f * forget_batch_size:]
  r_full = r_order[: nb_r * batch_size].reshape(nb_r, batch_size)

  def body(state, xs):
    r_idx, f_idx, k = xs
    state, metrics = step(state, (r_idx, f_idx), k)
    return state, metrics["loss"]

  total = jnp.zeros((), jnp.float32)
  if rem_f == 0:  # every forget batch full: one scan over the wrapped batch table
    if nb_r:
      f_tab = f_full[jnp.arange(nb_r) % cycle_len]
      state, l = jax.lax.scan(body, state, (r_full, f_tab, keys[:nb_r]))
      total = total + l.sum() * batch_size
  else:
    cycles, tail = divmod(nb_r, cycle_len)
    if cycles:
      r_cyc = r_full[: cycles * cycle_len].reshape(cycles, cycle_len, batch_size)
      k_cyc = keys[: cycles * cycle_len].reshape(cycles, cycle_len, *keys.shape[1:])

      def one_cycle(state, xs):
        rc, kc = xs
        loss = jnp.zeros((), jnp.float32)
        if full_f:
          state, l = jax.lax.scan(body, state, (rc[:full_f], f_full, kc[:full_f]))
          loss = l.sum()
        state, l = body(state, (rc[full_f], f_short, kc[full_f]))
        return state, loss + l

      state, l = jax.lax.scan(one_cycle, state, (r_cyc, k_cyc))
      total = total + l.sum() * batch_size
    if tail:  # the first ``tail`` (< cycle_len, so all full) forget batches of one more cycle
      lo = cycles * cycle_len
      state, l = jax.lax.scan(body, state, (r_full[lo:], f_full[:tail], keys[lo:nb_r]))
      total = total + l.sum() * batch_size
  if rem_r:
    j = nb_r % cycle_len
    f_idx = f_full[j] if j < full_f else f_short
    state, l = body(state, (r_order[nb_r * batch_size:], f_idx, keys[nb_r]))
    total = total + l * rem_r
  return state, total / n_r


def paired_forget_examples(n_retain: int, n_forget: int, batch_size: int, forget_batch_size: int) -> int:
  """Forget examples one epoch of :func:`cycle_pairs` feeds (short forget batches counted at their size)."""
  sizes = [min(forget_batch_size, n_forget - lo) for lo in range(0, n_forget, forget_batch_size)]
  steps_ = math.ceil(n_retain / batch_size)
  whole, part = divmod(steps_, len(sizes))
  return whole * n_forget + sum(sizes[:part])


def make(model, preset: str = "small-scale", beta: Optional[float] = None, epochs: Optional[int] = None,
         lr: Optional[float] = None, momentum: Optional[float] = None, weight_decay: Optional[float] = None,
         l2_init: Optional[float] = None, bn_train: Optional[bool] = None, batch_size: Optional[int] = None,
         forget_batch_size: Optional[int] = None) -> UnlearningMethod:
  """NegGrad+; ``None`` fields take the preset's value.

  Args:
    preset: ``small-scale``, ``MIA`` or ``deepunlearn``.
    beta: retain weight β (the forget term has weight 1 − β).
    l2_init: λ of the (λ/2)‖θ − θ₀‖² penalty inside the retain term.
    batch_size, forget_batch_size: retain and forget batch sizes.
  """
  hp = toolkit.resolve_preset("neggrad_plus preset", PRESETS, preset,
                              dict(beta=beta, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                   l2_init=l2_init, bn_train=bn_train, batch_size=batch_size,
                                   forget_batch_size=forget_batch_size))
  _validate.check_positive_int("epochs", hp["epochs"])
  _validate.check_positive_int("batch_size", hp["batch_size"])
  _validate.check_positive_int("forget_batch_size", hp["forget_batch_size"])
  if not 0.0 <= hp["beta"] <= 1.0:
    raise ValueError(f"beta must lie in [0, 1], got {hp['beta']}")

  def make_loss(anchor):

    def loss_fn(params, batch_stats, batch, key):
      del key
      (xr, yr), (xf, yf) = batch
      logits_r, stats = toolkit.forward(model, params, batch_stats, xr, hp["bn_train"])
      logits_f, stats = toolkit.forward(model, params, stats, xf, hp["bn_train"])
      ce_r = losses.cross_entropy(logits_r, yr)
      ce_f = losses.cross_entropy(logits_f, yf)
      retain_term = ce_r
      if hp["l2_init"]:
        retain_term = retain_term + 0.5 * hp["l2_init"] * toolkit.l2_to(params, anchor)
      loss = hp["beta"] * retain_term - (1.0 - hp["beta"]) * ce_f
      return loss, (stats, {"ce_retain": ce_r, "ce_forget": ce_f})

    return loss_fn

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    tx = torch_optimizer("sgd", hp["lr"], hp["momentum"], hp["weight_decay"])
    inner = toolkit.make_step(make_loss(original.params), tx)

    def step(state, batch, k):
      r_idx, f_idx = batch
      return inner(state, (data.gather(r_idx), data.gather(f_idx)), k)

    n_r, n_f = data.retain.shape[0], data.forget.shape[0]

    def epoch(state, e):
      r_order = data.retain[toolkit.epoch_order(jax.random.fold_in(key, RETAIN_STREAM), e, n_r)]
      f_order = data.forget[toolkit.epoch_order(jax.random.fold_in(key, FORGET_STREAM), e, n_f)]
      step_key = jax.random.fold_in(jax.random.fold_in(key, 2), e)
      return cycle_pairs(step, state, r_order, f_order, hp["batch_size"], hp["forget_batch_size"], step_key)

    state, epoch_losses = jax.lax.scan(epoch, toolkit.start(original, tx), jnp.arange(hp["epochs"]))
    return UnlearnResult(toolkit.finish(state), {"loss": epoch_losses})

  def cost(sizes: SetSizes) -> float:
    return hp["epochs"] * (1.0 + paired_forget_examples(sizes.retain, sizes.forget, hp["batch_size"],
                                                        hp["forget_batch_size"]) / sizes.retain)

  return UnlearningMethod("neggrad_plus", unlearn, cost,
                          "Kurmanji et al. arXiv 2302.09880, meghdadk/SCRUB; xcadet/deepunlearn",
                          dict(preset=preset, **hp))
