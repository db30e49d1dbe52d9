"""``amnesiacs``: "Amnesiacs" (Euclid/DUTH; 6th prize, LB #7).

Reset the layers least similar between original and retrained weights,
re-learn them by distillation on validation data, then fine-tune on the retain
set (``docs/algorithms.md`` §6.16). Teacher θ₀ in eval mode, student in train mode.

1. reset the stem and the output layer with torch's default init (weights
   U(±1/√fan_in), biases U(±1/√fan_in)): ResNet ``conv1`` and ``fc``; the
   small CNNs' first conv and ``head``; an MLP's first hidden layer and ``head``;
2. warm-up: ``warmup_epochs`` = 3 epochs over D_v (bs 64) minimising
   KL(p_θ₀^T ‖ p_θ^T), batchmean, no T²; SGD lr 9e-4, momentum 0.9, wd 5e-4, constant;
3. fine-tune: ``epochs`` = 3 on D_r with a new SGD (lr 1e-3, momentum 0.9,
   wd 5e-4, per-epoch cosine T_max = epochs); loss CE + softCE(p_θ₀^T, p_θ^T)
   + KL(p_θ₀^T ‖ p_θ^T) (``final_kl='forward'``, the port) or with the KL term
   made symmetric, KL(t‖s) + KL(s‖t) (``'symmetric'``, the findings paper's wording).

T = 5. ``warmup_classes``: ``None`` (all of D_v, the port) or a tuple of
classes (the write-up digest's {0, 1}), i.e. a loader over the filtered
subset. Under ``jit`` the subset has no static size, so each epoch shuffles
D_v, moves the selected examples to the front (keeping their shuffled order)
and runs ``ceil(|D_v| / bs)`` batch slots of which only the first
``ceil(n_selected / bs)`` update the model: every full batch is exactly the
filtered loader's batch. The one partial batch is filled up to the batch size
with other examples of D_v that carry zero loss weight, but batch-norm
statistics of that step still see them (the only deviation from filtering;
none when ``n_selected`` is a multiple of the batch size).

Sources: Kaggle write-up 458740 (via a third-party digest); euclid.ee.duth.gr;
Deep Unlearn port ``kgltop6.py`` (adapted from the Kaggle notebook
"unlearning-by-resetting-layers-7th-on-private-lb").
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from unlearn_jax.training import losses as losses_lib
from unlearn_jax.training import steps
from unlearn_jax.training.recipes import steps_per_epoch, torch_optimizer
from unlearn_jax.training.state import TrainState
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

RESET_STREAM, WARMUP_STREAM, FINETUNE_STREAM = 0, 1, 2

# Tiny-run settings for the registry contract test (see base.small_overrides).
SMALL_OVERRIDES = dict(warmup_epochs=1, epochs=1, batch_size=16)

def _kl_per_example(p_logits, q_logits, temperature):
  logp = jax.nn.log_softmax(p_logits.astype(jnp.float32) / temperature, axis=-1)
  logq = jax.nn.log_softmax(q_logits.astype(jnp.float32) / temperature, axis=-1)
  return (jnp.exp(logp) * (logp - logq)).sum(-1)


def filtered_epochs(step, state: TrainState, data, indices: jax.Array, classes: Sequence[int], batch_size: int,
                    epochs: int, key: jax.Array):
  """``epochs`` passes of ``step`` over the examples of ``indices`` whose label is in ``classes``.

  ``step(state, (x, y, w), key)`` gets per-example weights ``w`` (0 on padding).
  Epoch ``e`` shuffles with ``permutation(fold_in(fold_in(key, e), 0))`` (as
  :func:`toolkit.run_epochs`), keeps the selected examples in that order and
  cuts them into batches; slots past the last selected example do not update.
  Returns ``(state, [epochs] mean losses over the selected examples)``.
  """
  n = indices.shape[0]
  if epochs == 0 or n == 0:
    return state, jnp.zeros((epochs,), jnp.float32)
  slots = -(-n // batch_size)
  wanted = jnp.isin(data.labels[indices], jnp.asarray(classes))
  n_sel = wanted.sum()
  positions = jnp.arange(slots * batch_size).reshape(slots, batch_size)

  def epoch(state, e):
    epoch_key = jax.random.fold_in(key, e)
    perm = jax.random.permutation(jax.random.fold_in(epoch_key, 0), n)
    front = jnp.argsort(~wanted[perm], stable=True)  # selected first, shuffled order kept
    order = indices[perm][front]
    order = order[jnp.arange(slots * batch_size) % n].reshape(slots, batch_size)  # pad by wrapping around
    step_keys = jax.random.split(jax.random.fold_in(epoch_key, 1), slots)

    def body(state, xs):
      idx, pos, k = xs
      w = (pos < n_sel).astype(jnp.float32)
      x, y = data.gather(idx)
      new, metrics = step(state, (x, y, w), k)
      active = pos[0] < n_sel
      state = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
      return state, jnp.where(active, metrics["loss"] * w.sum(), 0.0)

    state, losses = jax.lax.scan(body, state, (order, positions, step_keys))
    return state, losses.sum() / jnp.maximum(n_sel, 1)

  return jax.lax.scan(epoch, state, jnp.arange(epochs, dtype=jnp.int32))

HPARAMS = (
    HParam("temperature", "float", 5.0, low=0, low_open=True, traceable=True, doc="distillation temperature T"),
    HParam("warmup_epochs", "int", 3, low=0, doc="distillation epochs over D_v"),
    HParam("warmup_lr", "float", 9e-4, low=0, traceable=True, doc="warm-up SGD learning rate"),
    HParam("epochs", "int", 3, low=1, doc="fine-tuning epochs over D_r"),
    HParam("lr", "float", 1e-3, low=0, traceable=True, doc="fine-tuning SGD learning rate (per-epoch cosine)"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("batch_size", "int", 64, low=1, doc="batch size"),
    HParam("final_kl", "str", "forward", choices=("forward", "symmetric"), doc="KL of the fine-tuning loss"),
    HParam("warmup_classes", "ints", None, low=0, optional=True, doc="classes of D_v used in warm-up (None: all)"),
)


def make(model, temperature: float = 5.0, warmup_epochs: int = 3, warmup_lr: float = 9e-4, epochs: int = 3,
         lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 64,
         final_kl: str = "forward", warmup_classes: Optional[Sequence[int]] = None) -> UnlearningMethod:
  """Amnesiacs' reset / warm-up / fine-tune; see the module docstring."""
  if final_kl not in ("forward", "symmetric"):
    raise ValueError(f"amnesiacs final_kl must be 'forward' or 'symmetric', got {final_kl!r}")
  classes = None if warmup_classes is None else tuple(int(c) for c in warmup_classes)
  hp = dict(temperature=temperature, warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, epochs=epochs, lr=lr,
            momentum=momentum, weight_decay=weight_decay, batch_size=batch_size, final_kl=final_kl,
            warmup_classes=classes)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    teacher = lambda x: jax.lax.stop_gradient(steps.apply_eval(model, original.params, original.batch_stats, x))
    modules = [toolkit.stem_module(original.params), toolkit.head_module(original.params)]
    params = toolkit.reinit_modules(jax.random.fold_in(key, RESET_STREAM), original.params, modules,
                                    "torch_default")

    def warmup_loss(params, batch_stats, batch, key):
      del key
      x, _, w = batch if len(batch) == 3 else (*batch, None)
      logits, stats = steps.apply_train(model, params, batch_stats, x)
      kl = _kl_per_example(teacher(x), logits, temperature)
      if w is None:
        return kl.mean(), (stats, {})
      return (w * kl).sum() / jnp.maximum(w.sum(), 1.0), (stats, {})

    def finetune_loss(params, batch_stats, batch, key):
      del key
      x, y = batch
      logits, stats = steps.apply_train(model, params, batch_stats, x)
      t_logits = teacher(x)
      ce = losses_lib.cross_entropy(logits, y)
      p_t = jax.nn.softmax(t_logits / temperature, axis=-1)
      soft_ce = -(p_t * jax.nn.log_softmax(logits / temperature, axis=-1)).sum(-1).mean()
      kl = _kl_per_example(t_logits, logits, temperature).mean()
      if final_kl == "symmetric":
        kl = kl + _kl_per_example(logits, t_logits, temperature).mean()
      return ce + soft_ce + kl, (stats, {})

    tx_w = torch_optimizer("sgd", warmup_lr, momentum, weight_decay)
    warm_step = toolkit.make_step(warmup_loss, tx_w)
    warm_start = toolkit.start(ModelState(params, original.batch_stats), tx_w)
    if classes is None:
      state, warm_losses = toolkit.run_epochs(warm_step, warm_start, data, data.validation, batch_size,
                                              warmup_epochs, jax.random.fold_in(key, WARMUP_STREAM))
    else:
      state, warm_losses = filtered_epochs(warm_step, warm_start, data, data.validation, classes, batch_size,
                                           warmup_epochs, jax.random.fold_in(key, WARMUP_STREAM))
    n_steps = steps_per_epoch(data.retain.shape[0], batch_size)
    tx = torch_optimizer("sgd", toolkit.epoch_cosine_schedule(lr, epochs, n_steps), momentum, weight_decay)
    state, losses = toolkit.run_epochs(toolkit.make_step(finetune_loss, tx), toolkit.start(toolkit.finish(state), tx),
                                       data, data.retain, batch_size, epochs, jax.random.fold_in(key, FINETUNE_STREAM))
    return UnlearnResult(toolkit.finish(state), {"warmup_loss": warm_losses, "loss": losses})

  def cost(sizes) -> float:
    teacher = 1.0 + 1.0 / 3.0
    return warmup_epochs * sizes.validation / max(sizes.retain, 1) * teacher + epochs * teacher

  return UnlearningMethod("amnesiacs", unlearn, cost,
                          "Kaggle 458740 (Amnesiacs, Euclid/DUTH, 6th prize); Deep Unlearn kgltop6.py", hp)
