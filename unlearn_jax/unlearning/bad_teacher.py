"""``bad_teacher``: distil from θ₀ on retain data and from an incompetent teacher on forget data (§6.7).

Data: D_f plus a per-seed random ``retain_frac`` (30%) subset of D_r, as one
shuffled union; each example carries a flag u (1 = forget). The target is

    q = u·softmax(f_bad(x)/T) + (1 − u)·softmax(f_θ₀(x)/T)

and the student (train mode) minimises KL(q ‖ softmax(f_θ(x)/T)) with torch's
``kl_div`` default 'mean' reduction (÷ B·C; ``kl_reduction='batchmean'`` ÷ B).
The bad teacher is a fresh model of the same architecture initialised from the
seed key (torch init laws of :mod:`unlearn_jax.models`), in eval mode with its
fresh statistics (mean 0, var 1); the good teacher is θ₀ in eval mode.

Defaults (the reference notebook's call): T 1, Adam 1e-4 (no decay), 1 epoch,
bs 256. The Deep Unlearn port uses 10 epochs and lr 0.01.

Source: Chundawat et al., "Can Bad Teaching Induce Forgetting?", AAAI 2023,
arXiv 2205.08096; ``vikram2000b/bad-teaching-unlearning`` (``unlearn.py``,
notebook cell 15).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.training import steps
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, SetSizes, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

SMALL_OVERRIDES = dict(epochs=1, batch_size=16)
TEACHER_STREAM, SUBSET_STREAM, ORDER_STREAM, STEP_STREAM = 0, 1, 2, 3


def mixed_target(bad_logits, good_logits, is_forget, temperature: float) -> jax.Array:
  """``q = u·p_bad^T + (1 − u)·p_good^T`` per example (``u`` = ``is_forget``)."""
  u = is_forget.astype(jnp.float32)[:, None]
  return u * jax.nn.softmax(bad_logits / temperature, -1) + (1 - u) * jax.nn.softmax(good_logits / temperature, -1)


def kl_to_target(target: jax.Array, student_logits: jax.Array, temperature: float, reduction: str) -> jax.Array:
  """torch ``kl_div(log_softmax(student/T), target)``: Σ q(log q − log p) ÷ B·C ('mean') or ÷ B."""
  logp = jax.nn.log_softmax(student_logits / temperature, -1)
  total = (jax.scipy.special.xlogy(target, target) - target * logp).sum()
  return total / (target.size if reduction == "mean" else target.shape[0])

HPARAMS = (
    HParam("retain_frac", "float", 0.3, low=0, high=1, low_open=True, high_open=True,
           doc="fraction of D_r drawn per seed into the training union"),
    HParam("temperature", "float", 1.0, low=0, low_open=True, traceable=True, doc="T of both teachers and the student"),
    HParam("lr", "float", 1e-4, low=0, traceable=True, doc="Adam learning rate"),
    HParam("epochs", "int", 1, low=1, doc="passes over the union"),
    HParam("batch_size", "int", 256, low=1, doc="batch size"),
    HParam("weight_decay", "float", 0.0, low=0, doc="coupled L2 decay"),
    HParam("kl_reduction", "str", "mean", choices=("mean", "batchmean"), doc="KL reduction (÷ B·C or ÷ B)"),
)


def make(model, retain_frac: float = 0.3, temperature: float = 1.0, lr: float = 1e-4, epochs: int = 1,
         batch_size: int = 256, weight_decay: float = 0.0, kl_reduction: str = "mean") -> UnlearningMethod:
  """Bad-Teacher unlearning.

  Args:
    retain_frac: fraction of D_r drawn (per seed) into the training union.
    temperature: T of both teachers and the student.
    lr, weight_decay: torch Adam (coupled decay).
    kl_reduction: ``mean`` (÷ B·C, the reference) or ``batchmean`` (÷ B).
  """
  _validate.check_fraction("retain_frac", retain_frac)
  _validate.check_in("kl_reduction", kl_reduction, ("mean", "batchmean"))
  _validate.check_positive_int("epochs", epochs)
  _validate.check_positive_int("batch_size", batch_size)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    bad_params, bad_stats = init_variables(model, jax.random.fold_in(key, TEACHER_STREAM), data.image_shape)
    n_r, n_f = data.retain.shape[0], data.forget.shape[0]
    n_sub = max(1, int(round(retain_frac * n_r)))
    subset = data.retain[jax.random.permutation(jax.random.fold_in(key, SUBSET_STREAM), n_r)[:n_sub]]
    idx = jnp.concatenate([data.forget, subset])
    flag = jnp.concatenate([jnp.ones((n_f,), bool), jnp.zeros((n_sub,), bool)])

    def loss_fn(params, batch_stats, batch, k):
      del k
      b_idx, b_flag = batch
      x, _ = data.gather(b_idx)
      bad = steps.apply_eval(model, bad_params, bad_stats, x)
      good = steps.apply_eval(model, original.params, original.batch_stats, x)
      q = jax.lax.stop_gradient(mixed_target(bad, good, b_flag, temperature))
      logits, stats = steps.apply_train(model, params, batch_stats, x)
      return kl_to_target(q, logits, temperature, kl_reduction), (stats, {})

    tx = torch_optimizer("adam", lr, 0.9, weight_decay)
    step = toolkit.make_step(loss_fn, tx)
    order_key, step_key = jax.random.fold_in(key, ORDER_STREAM), jax.random.fold_in(key, STEP_STREAM)

    def epoch(state, e):
      order = toolkit.epoch_order(order_key, e, idx.shape[0])
      return toolkit.run_batches(step, state, (idx[order], flag[order]), batch_size,
                                 jax.random.fold_in(step_key, e))

    state, epoch_losses = jax.lax.scan(epoch, toolkit.start(original, tx), jnp.arange(epochs))
    return UnlearnResult(toolkit.finish(state), {"loss": epoch_losses})

  def cost(sizes: SetSizes) -> float:
    return epochs * (retain_frac + sizes.forget / sizes.retain) * (1.0 + 2.0 / 3.0)

  return UnlearningMethod("bad_teacher", unlearn, cost,
                          "Chundawat et al. AAAI 2023 arXiv 2205.08096, vikram2000b/bad-teaching-unlearning",
                          dict(retain_frac=retain_frac, temperature=temperature, lr=lr, epochs=epochs,
                               batch_size=batch_size, weight_decay=weight_decay, kl_reduction=kl_reduction))
