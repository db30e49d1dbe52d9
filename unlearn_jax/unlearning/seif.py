"""``seif``: Seif Achour's entry (3rd prize, LB #4).

Heavy Gaussian noise on conv weights, a fine-tune whose loss is scaled by the
batch's mean class weight (1 for class 0, 0.05 otherwise), and a small second
noise draw before the last epoch (``docs/algorithms.md`` §6.13):

1. θ_conv += N(0, σ₁²), σ₁ = 0.6;
2. fine-tune ``epochs`` (4) on D_r with loss CE × mean_i w[y_i], SGD lr 7e-4,
   momentum 0.9, wd 5e-4, per-epoch cosine T_max = epochs, bs 64;
3. before the last epoch, θ_conv += N(0, σ₂²), σ₂ = 0.005 (same optimiser).

``class_weights``: ``'author'`` (default) is the entry's own vector w = [1, w₀, …, w₀]
with w₀ = ``other_weight`` = 0.05 (the author's write-up, Kaggle 459334, kept as a
comment in the Deep Unlearn port); ``'balanced'`` is what the widely used Deep
Unlearn port ``kgltop3.py`` runs instead: scikit-learn's
``compute_class_weight("balanced")`` on the retain labels, w_c = n_r / (C · n_c)
(C classes present in D_r; a class absent from D_r never weights a batch). Both
scale the batch-mean CE by mean_i w[y_i], so ``balanced`` (mean weight ≈ 1) runs
at an effective learning rate many times the ``author`` one (mean weight ≈ 0.15
with 10 balanced classes).

``noise_scope``: ``'stem'`` (default, as the Deep Unlearn port, which noises
only top-level modules named ``conv…``, i.e. ResNet's stem ``conv1``; for the
small models the first conv in tree order, for an MLP its first hidden Dense
layer) or ``'all'`` (every conv kernel, the write-up's wording). Only kernels
are noised (registry convs have no bias).

Sources: Kaggle write-up 459334; Deep Unlearn port ``kgltop3.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unlearn_jax.training import losses as losses_lib
from unlearn_jax.training import steps
from unlearn_jax.training.recipes import steps_per_epoch, torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

NOISE1_STREAM, NOISE2_STREAM, DATA_STREAM = 0, 1, 2
NOISE_SCOPES = ("stem", "all")
CLASS_WEIGHTS = ("author", "balanced")

# Tiny-run settings for the registry contract test (see base.small_overrides).
SMALL_OVERRIDES = dict(epochs=2, batch_size=16)

def noise_mask(params, scope: str):
  """Bool pytree: the kernels that receive noise under ``scope``."""
  if scope == "stem":
    stem = toolkit.stem_module(params)
    return toolkit.leaf_mask(params, lambda p, x: toolkit.module_path(p) == stem and x.ndim >= 2)
  return toolkit.leaf_mask(params, toolkit.is_conv_kernel)


def add_noise(params, mask, key: jax.Array, std: float):
  """``params`` plus N(0, std²) on the leaves where ``mask`` is True."""
  keys = toolkit.keys_like(key, params)
  return jax.tree.map(lambda x, m, k: x + std * jax.random.normal(k, x.shape, x.dtype) if m else x,
                      params, mask, keys)

HPARAMS = (
    HParam("epochs", "int", 4, low=1, doc="fine-tuning epochs"),
    HParam("lr", "float", 7e-4, low=0, traceable=True, doc="SGD learning rate (per-epoch cosine)"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("batch_size", "int", 64, low=1, doc="batch size"),
    HParam("noise_std", "float", 0.6, low=0, traceable=True, doc="σ of the first conv-weight noise"),
    HParam("last_noise_std", "float", 0.005, low=0, traceable=True, doc="σ of the draw before the last epoch"),
    HParam("noise_scope", "str", "stem", choices=NOISE_SCOPES, doc="noised conv kernels"),
    HParam("class0_weight", "float", 1.0, low=0, traceable=True, doc="loss weight of class 0"),
    HParam("other_weight", "float", 0.05, low=0, traceable=True, doc="loss weight of the other classes"),
    HParam("class_weights", "str", "author", choices=CLASS_WEIGHTS,
           doc="author: [class0_weight, other_weight, ...] (the write-up); balanced: scikit-learn's "
               "balanced weights of the retain labels (the Deep Unlearn port)"),
)


def balanced_weights(counts: jax.Array) -> jax.Array:
  """scikit-learn's ``compute_class_weight("balanced")``: ``n / (C · n_c)`` over the C classes present
  (absent classes get 0: they never occur in a batch)."""
  present = counts > 0
  n, c = counts.sum(), present.sum()
  return jnp.where(present, n / (c * jnp.maximum(counts, 1.0)), 0.0)


def make(model, epochs: int = 4, lr: float = 7e-4, momentum: float = 0.9, weight_decay: float = 5e-4,
         batch_size: int = 64, noise_std: float = 0.6, last_noise_std: float = 0.005,
         noise_scope: str = "stem", class0_weight: float = 1.0, other_weight: float = 0.05,
         class_weights: str = "author") -> UnlearningMethod:
  """Seif's noise + weighted fine-tune; see the module docstring."""
  if noise_scope not in NOISE_SCOPES:
    raise ValueError(f"seif noise_scope must be one of {NOISE_SCOPES}, got {noise_scope!r}")
  if class_weights not in CLASS_WEIGHTS:
    raise ValueError(f"seif class_weights must be one of {CLASS_WEIGHTS}, got {class_weights!r}")
  if epochs < 1:
    raise ValueError(f"seif epochs must be >= 1, got {epochs}")
  hp = dict(epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
            noise_std=noise_std, last_noise_std=last_noise_std, noise_scope=noise_scope,
            class0_weight=class0_weight, other_weight=other_weight, class_weights=class_weights)

  def make_loss(weights):

    def loss_fn(params, batch_stats, batch, key):
      del key
      x, y = batch
      logits, new_stats = steps.apply_train(model, params, batch_stats, x)
      w = jnp.where(y == 0, class0_weight, other_weight) if weights is None else weights[y]
      return losses_lib.cross_entropy(logits, y) * w.mean(), (new_stats, {})

    return loss_fn

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    weights = balanced_weights(data.class_counts("retain")) if class_weights == "balanced" else None
    mask = noise_mask(original.params, noise_scope)
    params = add_noise(original.params, mask, jax.random.fold_in(key, NOISE1_STREAM), noise_std)
    n_steps = steps_per_epoch(data.retain.shape[0], batch_size)
    tx = torch_optimizer("sgd", toolkit.epoch_cosine_schedule(lr, epochs, n_steps), momentum, weight_decay)
    step = toolkit.make_step(make_loss(weights), tx)
    data_key = jax.random.fold_in(key, DATA_STREAM)
    state = toolkit.start(ModelState(params, original.batch_stats), tx)
    state, first = toolkit.run_epochs(step, state, data, data.retain, batch_size, epochs - 1, data_key)
    state = state.replace(params=add_noise(state.params, mask, jax.random.fold_in(key, NOISE2_STREAM),
                                           last_noise_std))
    state, last = toolkit.run_epochs(step, state, data, data.retain, batch_size, 1, data_key,
                                     epoch_offset=epochs - 1)
    return UnlearnResult(toolkit.finish(state), {"loss": jnp.concatenate([first, last])})

  return UnlearningMethod("seif", unlearn, lambda sizes: float(epochs),
                          "Kaggle 459334 (Seif Achour, 3rd prize); Deep Unlearn kgltop3.py", hp)
