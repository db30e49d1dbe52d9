"""``l1_sparse``: fine-tune on D_r under a decaying ℓ1 penalty (``docs/algorithms.md`` §6.8).

At epoch t (0-based) the loss is CE(f_θ(x_r), y_r) + γ_t‖θ‖₁ with

    γ_t = γ·(1 − t/(E − E₀)) for t < E − E₀, else 0   (γ constant when E = E₀),

E₀ = ``no_l1_epochs`` trailing epochs without the penalty and the norm over all
parameters, BatchNorm included (``l1_scope='no_bn'`` leaves BN out). SGD 0.01
/ 0.9 / 5e-4, bs 256, 10 epochs, train mode. The source gives no recommended γ;
1e-4 is what several third-party CIFAR-10 scripts use.

Source: Jia et al., "Model Sparsity Can Simplify Machine Unlearning",
NeurIPS 2023, arXiv 2304.04934; ``OPTML-Group/Unlearn-Sparse``
(``unlearn/FT.py``, ``unlearn/impl.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.training import engine
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

SMALL_OVERRIDES = dict(epochs=2, batch_size=16)


def gamma_schedule(gamma: float, epochs: int, no_l1_epochs: int) -> list[float]:
  """``[γ_0, …, γ_{E−1}]`` (Python floats) of the linear decay."""
  if epochs == no_l1_epochs:
    return [gamma] * epochs
  active = epochs - no_l1_epochs
  return [gamma * (1 - t / active) if t < active else 0.0 for t in range(epochs)]


def l1_norm(params, scope: str) -> jax.Array:
  """``‖θ‖₁`` over all leaves (``all``) or over the non-BatchNorm leaves (``no_bn``)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return sum(jnp.abs(x).sum() for p, x in flat if scope == "all" or not toolkit.is_batchnorm(p, x))

HPARAMS = (
    HParam("gamma", "float", 1e-4, low=0, traceable=True, doc="initial ℓ1 coefficient γ"),
    HParam("no_l1_epochs", "int", 0, low=0, doc="trailing epochs without the penalty (at most epochs)"),
    HParam("l1_scope", "str", "all", choices=("all", "no_bn"), doc="parameters under the ℓ1 norm"),
    HParam("lr", "float", 0.01, low=0, traceable=True, doc="SGD learning rate"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("epochs", "int", 10, low=1, doc="passes over D_r"),
    HParam("batch_size", "int", 256, low=1, doc="retain batch size"),
)


def make(model, gamma: float = 1e-4, no_l1_epochs: int = 0, l1_scope: str = "all", lr: float = 0.01,
         momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 10,
         batch_size: int = 256) -> UnlearningMethod:
  """ℓ1-sparse fine-tuning.

  Args:
    gamma: initial ℓ1 coefficient γ.
    no_l1_epochs: E₀, trailing epochs without the penalty (0 ≤ E₀ ≤ E).
    l1_scope: ``all`` or ``no_bn``.
  """
  _validate.check_positive_int("epochs", epochs)
  _validate.check_positive_int("batch_size", batch_size)
  _validate.check_in("l1_scope", l1_scope, ("all", "no_bn"))
  if not 0 <= no_l1_epochs <= epochs:
    raise ValueError(f"no_l1_epochs must lie in [0, {epochs}], got {no_l1_epochs}")
  gammas = gamma_schedule(gamma, epochs, no_l1_epochs)

  ce = toolkit.ce_loss(model)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    tx = torch_optimizer("sgd", lr, momentum, weight_decay)
    gamma_table = jnp.asarray(gammas, jnp.float32)

    def epoch(state, xs):
      e, g = xs

      def loss_fn(params, batch_stats, batch, k):
        loss, aux = ce(params, batch_stats, batch, k)
        return loss + g * l1_norm(params, l1_scope), aux

      return engine.run_epoch(toolkit.make_step(loss_fn, tx), state, data, data.retain, batch_size, key, e)

    state, epoch_losses = jax.lax.scan(epoch, toolkit.start(original, tx), (jnp.arange(epochs), gamma_table))
    return UnlearnResult(toolkit.finish(state), {"loss": epoch_losses, "gamma": gamma_table})

  return UnlearningMethod("l1_sparse", unlearn, lambda sizes: float(epochs),
                          "Jia et al. NeurIPS 2023 arXiv 2304.04934, OPTML-Group/Unlearn-Sparse unlearn/FT.py",
                          dict(gamma=gamma, no_l1_epochs=no_l1_epochs, l1_scope=l1_scope, lr=lr, momentum=momentum,
                               weight_decay=weight_decay, epochs=epochs, batch_size=batch_size))
