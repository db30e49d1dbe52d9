"""``scrub``: SCRUB and SCRUB+R, ``docs/algorithms.md`` §6.4.

A student starting at θ₀ alternates, against the frozen teacher θ₀ (eval mode),
a *max* epoch over D_f minimising −DistillKL_T(teacher, student) and a *min*
epoch over D_r minimising γ·CE + α·DistillKL_T. For epoch e = 1..E the rate is
η₀·0.1^k with k the number of decay milestones d < e; the max epoch runs only
while e ≤ msteps. One optimiser state is shared by both kinds of step, so
momentum carries across them. The student runs in train mode (BatchNorm
statistics threaded through every step in call order).

SCRUB+R (``rewind=True``): after every epoch the student is snapshotted with
its forget error (eval mode, on D_f); the target is the final student's error
on the forget-validation set (validation examples whose class occurs in D_f,
selected with a fixed-shape mask); the snapshot closest to the target is
returned. This keeps E snapshots per seed.

``separate_optimizers=True`` gives the max steps an optimiser state of their
own (each with the per-epoch rate table); the reference shares one.

Presets (``preset``, every field overridable):

* ``MIA`` (default): γ 1, α 0.5, T 4, E 5, msteps 3, η₀ 5e-4, decay [3,5,9],
  SGD momentum 0.9 wd 5e-4, bs retain/forget 32/16;
* ``large-scale``: γ 0.99, α 0.001, T 4, E 3, msteps 2, η₀ 5e-4, decay
  [3,5,9], SGD 0.9 / 5e-4, bs 256/512;
* ``small-scale``: γ 1, α 0.5, T 2, E 10, msteps 3, η₀ 5e-4, decay [5,8,9],
  Adam with coupled wd 0.1, bs retain/forget 32/64 (the small-scale notebook's loaders).

Source: Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023,
arXiv 2302.09880; repository ``meghdadk/SCRUB``
(``thirdparty/repdistiller/helper/loops.py``, ``distiller_zoo/KD.py`` and the
MIA, large-scale and small-scale notebooks).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.training import engine, losses, steps
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, SetSizes, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

PRESETS = {
    "MIA": dict(gamma=1.0, alpha=0.5, temperature=4.0, epochs=5, msteps=3, lr=5e-4, decay_epochs=(3, 5, 9),
                optimizer="sgd", momentum=0.9, weight_decay=5e-4, batch_size=32, forget_batch_size=16),
    "large-scale": dict(gamma=0.99, alpha=0.001, temperature=4.0, epochs=3, msteps=2, lr=5e-4,
                        decay_epochs=(3, 5, 9), optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                        batch_size=256, forget_batch_size=512),
    "small-scale": dict(gamma=1.0, alpha=0.5, temperature=2.0, epochs=10, msteps=3, lr=5e-4,
                        decay_epochs=(5, 8, 9), optimizer="adam", momentum=0.9, weight_decay=0.1,
                        batch_size=32, forget_batch_size=64),
}

SMALL_OVERRIDES = dict(epochs=2, msteps=1, batch_size=16, forget_batch_size=8)

MAX_STREAM, MIN_STREAM = 0, 1
HP_NAMES = tuple(PRESETS["MIA"])


def resolve(preset: str, overrides: dict) -> dict:
  """The preset's hyperparameters with the non-``None`` ``overrides`` applied, validated."""
  hp = toolkit.resolve_preset("scrub preset", PRESETS, preset, overrides, declarations=HPARAMS)
  _validate.check_positive_int("epochs", hp["epochs"])
  _validate.check_positive_int("msteps", hp["msteps"], minimum=0)
  _validate.check_positive_int("batch_size", hp["batch_size"])
  _validate.check_positive_int("forget_batch_size", hp["forget_batch_size"])
  _validate.check_in("optimizer", hp["optimizer"], ("sgd", "adam"))
  return hp


def epoch_lrs(hp: dict) -> list[float]:
  """η_e for e = 1..E: η₀·0.1^k, k = number of milestones d with e > d."""
  return [hp["lr"] * 0.1 ** sum(e > d for d in hp["decay_epochs"]) for e in range(1, hp["epochs"] + 1)]


def epoch_starts(hp: dict, n_retain: int, n_forget: int) -> list[int]:
  """Optimiser step count at the start of each epoch (max epochs add forget steps)."""
  nr = math.ceil(n_retain / hp["batch_size"])
  nf = math.ceil(n_forget / hp["forget_batch_size"])
  starts, count = [], 0
  for e in range(1, hp["epochs"] + 1):
    starts.append(count)
    count += nr + (nf if e <= hp["msteps"] else 0)
  return starts


def forget_validation_mask(data) -> jax.Array:
  """``[|D_v|]`` 0/1: validation examples whose class occurs in D_f."""
  present = data.class_counts("forget") > 0
  return present[data.labels[data.validation]].astype(jnp.float32)


def build_unlearn(model, hp: dict, rewind: bool, separate_optimizers: bool = False,
                  perturb: Optional[Callable[[ModelState, jax.Array], ModelState]] = None,
                  reinject: Optional[Callable[[object, jax.Array], object]] = None):
  """The SCRUB loop as ``unlearn(original, data, key)``.

  Args:
    separate_optimizers: give the max steps an optimiser state of their own (the
      reference shares one, so momentum carries across max and min steps).
    perturb: optional ``(original, key) -> student start`` (the teacher stays at ``original``).
    reinject: optional ``(params, key) -> params`` applied before the last epoch.
  """
  predict = steps.make_predict_fn(model)
  T = hp["temperature"]

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    teacher = lambda x: jax.lax.stop_gradient(
        steps.apply_eval(model, original.params, original.batch_stats, x))

    def max_loss(params, batch_stats, batch, k):
      del k
      x, _ = batch
      logits, stats = steps.apply_train(model, params, batch_stats, x)
      return -toolkit.distill_kl(teacher(x), logits, T), (stats, {})

    def min_loss(params, batch_stats, batch, k):
      del k
      x, y = batch
      logits, stats = steps.apply_train(model, params, batch_stats, x)
      loss = hp["gamma"] * losses.cross_entropy(logits, y) + hp["alpha"] * toolkit.distill_kl(teacher(x), logits, T)
      return loss, (stats, {})

    n_r, n_f = data.retain.shape[0], data.forget.shape[0]
    lrs = epoch_lrs(hp)
    if separate_optimizers:
      nr, nf = math.ceil(n_r / hp["batch_size"]), math.ceil(n_f / hp["forget_batch_size"])
      min_lr = toolkit.epoch_table_lr(lrs, [e * nr for e in range(hp["epochs"])])
      max_lr = toolkit.epoch_table_lr(lrs, [e * nf for e in range(hp["epochs"])])
    else:
      min_lr = max_lr = toolkit.epoch_table_lr(lrs, epoch_starts(hp, n_r, n_f))
    tx = torch_optimizer(hp["optimizer"], min_lr, hp["momentum"], hp["weight_decay"])
    max_tx = torch_optimizer(hp["optimizer"], max_lr, hp["momentum"], hp["weight_decay"])
    max_step, min_step = toolkit.make_step(max_loss, max_tx), toolkit.make_step(min_loss, tx)
    start = original if perturb is None else perturb(original, jax.random.fold_in(key, 2))
    state = toolkit.start(start, tx)
    max_opt = max_tx.init(start.params) if separate_optimizers else None
    max_key, min_key = jax.random.fold_in(key, MAX_STREAM), jax.random.fold_in(key, MIN_STREAM)
    reinject_key = jax.random.fold_in(key, 3)
    E, msteps = hp["epochs"], min(hp["msteps"], hp["epochs"])

    def forget_error(state):
      logits = predict(state.params, state.batch_stats, data, data.forget)
      return 1.0 - steps.accuracy(logits, data.labels[data.forget])

    def epoch(carry, e, with_max: bool):
      state, max_opt = carry
      if reinject is not None:
        noisy = reinject(state.params, reinject_key)
        params = jax.tree.map(lambda a, b: jnp.where(e == E, a, b), noisy, state.params)
        state = state.replace(params=params)
      max_l = jnp.zeros((), jnp.float32)
      if with_max:
        if separate_optimizers:
          min_opt, state = state.opt_state, state.replace(opt_state=max_opt)
        state, max_l = engine.run_epoch(max_step, state, data, data.forget, hp["forget_batch_size"], max_key, e)
        if separate_optimizers:
          max_opt, state = state.opt_state, state.replace(opt_state=min_opt)
      state, min_l = engine.run_epoch(min_step, state, data, data.retain, hp["batch_size"], min_key, e)
      out = dict(max_loss=max_l, min_loss=min_l)
      if rewind:
        out.update(forget_error=forget_error(state), snapshot=toolkit.finish(state))
      return (state, max_opt), out

    outs, carry = [], (state, max_opt)
    if msteps:
      carry, o = jax.lax.scan(lambda c, e: epoch(c, e, True), carry, jnp.arange(1, msteps + 1))
      outs.append(o)
    if E > msteps:
      carry, o = jax.lax.scan(lambda c, e: epoch(c, e, False), carry, jnp.arange(msteps + 1, E + 1))
      outs.append(o)
    state = carry[0]
    per_epoch = jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)
    metrics = {"loss": per_epoch["min_loss"], "max_loss": per_epoch["max_loss"]}
    result = toolkit.finish(state)
    if rewind:
      mask = forget_validation_mask(data)
      val_logits = predict(state.params, state.batch_stats, data, data.validation)
      wrong = (val_logits.argmax(-1) != data.labels[data.validation]).astype(jnp.float32)
      target = (wrong * mask).sum() / jnp.maximum(mask.sum(), 1.0)
      chosen = jnp.argmin(jnp.abs(per_epoch["forget_error"] - target))
      result = jax.tree.map(lambda s: s[chosen], per_epoch["snapshot"])
      metrics.update(forget_error=per_epoch["forget_error"], target_error=target, rewind_epoch=chosen)
    return UnlearnResult(result, metrics)

  return unlearn


def cost(hp: dict, sizes: SetSizes) -> float:
  """E retain epochs plus min(msteps, E) forget epochs, each with a teacher forward (⅓)."""
  passes = hp["epochs"] + min(hp["msteps"], hp["epochs"]) * sizes.forget / sizes.retain
  return passes * (1.0 + 1.0 / 3.0)

HPARAMS = (
    HParam("preset", "str", "MIA", choices=tuple(PRESETS), doc="reference setting the other fields default to"),
    HParam("rewind", "bool", False, doc="SCRUB+R: return the epoch snapshot closest to the forget-error target"),
    HParam("separate_optimizers", "bool", False, doc="max steps get their own optimiser state"),
    HParam("gamma", "float", None, low=0, optional=True, traceable=True,
           doc="weight of CE on D_r (None: the preset's value)"),
    HParam("alpha", "float", None, low=0, optional=True, traceable=True,
           doc="weight of KL_T on D_r (None: the preset's value)"),
    HParam("temperature", "float", None, low=0, low_open=True, optional=True, traceable=True,
           doc="distillation temperature T (None: the preset's value)"),
    HParam("epochs", "int", None, low=1, optional=True, doc="min epochs over D_r (None: the preset's value)"),
    HParam("msteps", "int", None, low=0, optional=True,
           doc="leading epochs with a max step over D_f (None: the preset's value)"),
    HParam("lr", "float", None, low=0, optional=True, traceable=True,
           doc="initial learning rate η₀ (None: the preset's value)"),
    HParam("decay_epochs", "ints", None, low=0, optional=True,
           doc="epochs after which η decays ×0.1 (None: the preset's value)"),
    HParam("optimizer", "str", None, choices=("sgd", "adam"), optional=True,
           doc="optimiser (None: the preset's value)"),
    HParam("momentum", "float", None, low=0, high=1, optional=True, doc="SGD momentum (None: the preset's value)"),
    HParam("weight_decay", "float", None, low=0, optional=True, doc="coupled L2 decay (None: the preset's value)"),
    HParam("batch_size", "int", None, low=1, optional=True, doc="retain batch size (None: the preset's value)"),
    HParam("forget_batch_size", "int", None, low=1, optional=True, doc="forget batch size (None: the preset's value)"),
)


def make(model, preset: str = "MIA", rewind: bool = False, separate_optimizers: bool = False,
         gamma: Optional[float] = None, alpha: Optional[float] = None, temperature: Optional[float] = None,
         epochs: Optional[int] = None, msteps: Optional[int] = None, lr: Optional[float] = None,
         decay_epochs: Optional[Sequence[int]] = None, optimizer: Optional[str] = None,
         momentum: Optional[float] = None, weight_decay: Optional[float] = None,
         batch_size: Optional[int] = None, forget_batch_size: Optional[int] = None) -> UnlearningMethod:
  """SCRUB (``rewind=True``: SCRUB+R); ``None`` fields take the preset's value.

  ``separate_optimizers=True`` gives the max steps their own optimiser state
  (the reference shares one between max and min steps).
  """
  hp = resolve(preset, dict(gamma=gamma, alpha=alpha, temperature=temperature, epochs=epochs, msteps=msteps,
                            lr=lr, decay_epochs=decay_epochs, optimizer=optimizer, momentum=momentum,
                            weight_decay=weight_decay, batch_size=batch_size,
                            forget_batch_size=forget_batch_size))
  return UnlearningMethod("scrub", build_unlearn(model, hp, rewind, separate_optimizers),
                          lambda sizes: cost(hp, sizes), "Kurmanji et al. arXiv 2302.09880, meghdadk/SCRUB",
                          dict(preset=preset, rewind=rewind, separate_optimizers=separate_optimizers, **hp))
