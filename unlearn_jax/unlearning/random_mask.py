"""``random_mask``: zero a random half of the weights, then fine-tune (songxinkuan).

``docs/algorithms.md`` §6.19:

1. multiply every tensor in the pool by an independent Bernoulli(``keep_prob``
   = 0.5) mask. ``pool='torch_name'`` (default, the notebook): every parameter
   whose torch ``state_dict`` name lacks ``"bn"`` — conv and Dense kernels and
   biases, and ResNet's projection BatchNorm ``downsample.1.*``; for the small
   models every conv/Dense leaf. ``pool='no_bn'``: the same without any
   BatchNorm (projection BN excluded);
2. fine-tune with CE for 5 epochs at bs 64: Adam lr 1e-4 with coupled wd 1e-4
   (``optimizer='sgd'`` swaps in SGD momentum 0.9), cosine per *step* over all
   steps down to 1e-5.

Source: ``songxinkuan/Machine-unlearning-random-mask`` (notebook; self-reported
public 0.0795, private 0.0937).
"""

from __future__ import annotations

import jax
import optax

from unlearn_jax.training.recipes import steps_per_epoch, torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

MASK_STREAM, DATA_STREAM = 0, 1
POOLS = ("torch_name", "no_bn")

# Tiny-run settings for the registry contract test (see base.small_overrides).
SMALL_OVERRIDES = dict(epochs=1, batch_size=16)

def pool_mask(params, pool: str):
  """Bool pytree of the leaves a name-based pool selects (shared by Sun's and this entry's rules)."""
  if pool == "torch_name":
    return toolkit.leaf_mask(params, lambda p, x: "bn" not in toolkit.torch_name(p))
  return toolkit.leaf_mask(params, lambda p, x: "bn" not in toolkit.torch_name(p)
                           and not toolkit.is_batchnorm(p, x))

HPARAMS = (
    HParam("keep_prob", "float", 0.5, low=0, high=1, doc="probability a weight is kept"),
    HParam("pool", "str", "torch_name", choices=POOLS, doc="masked tensors"),
    HParam("epochs", "int", 5, low=1, doc="fine-tuning epochs"),
    HParam("lr", "float", 1e-4, low=0, doc="initial learning rate (per-step cosine)"),
    HParam("min_lr", "float", 1e-5, low=0, traceable=True, doc="cosine floor"),
    HParam("weight_decay", "float", 1e-4, low=0, doc="coupled L2 decay"),
    HParam("optimizer", "str", "adam", choices=("adam", "sgd"), doc="optimiser"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("batch_size", "int", 64, low=1, doc="batch size"),
)


def make(model, keep_prob: float = 0.5, pool: str = "torch_name", epochs: int = 5, lr: float = 1e-4,
         min_lr: float = 1e-5, weight_decay: float = 1e-4, optimizer: str = "adam", momentum: float = 0.9,
         batch_size: int = 64) -> UnlearningMethod:
  """Random-mask + fine-tune; see the module docstring."""
  if pool not in POOLS:
    raise ValueError(f"random_mask pool must be one of {POOLS}, got {pool!r}")
  if not 0.0 <= keep_prob <= 1.0:
    raise ValueError(f"random_mask keep_prob must be in [0, 1], got {keep_prob}")
  if optimizer not in ("adam", "sgd"):
    raise ValueError(f"random_mask optimizer must be 'adam' or 'sgd', got {optimizer!r}")
  hp = dict(keep_prob=keep_prob, pool=pool, epochs=epochs, lr=lr, min_lr=min_lr, weight_decay=weight_decay,
            optimizer=optimizer, momentum=momentum, batch_size=batch_size)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    selected = pool_mask(original.params, pool)
    keys = toolkit.keys_like(jax.random.fold_in(key, MASK_STREAM), original.params)
    params = jax.tree.map(
        lambda x, s, k: x * jax.random.bernoulli(k, keep_prob, x.shape).astype(x.dtype) if s else x,
        original.params, selected, keys)
    total = max(epochs * steps_per_epoch(data.retain.shape[0], batch_size), 1)
    schedule = optax.cosine_decay_schedule(lr, total, alpha=min_lr / lr if lr else 0.0)
    tx = torch_optimizer(optimizer, schedule, momentum, weight_decay)
    step = toolkit.make_step(toolkit.ce_loss(model), tx)
    state, losses = toolkit.run_epochs(step, toolkit.start(ModelState(params, original.batch_stats), tx), data,
                                       data.retain, batch_size, epochs, jax.random.fold_in(key, DATA_STREAM))
    return UnlearnResult(toolkit.finish(state), {"loss": losses})

  return UnlearningMethod("random_mask", unlearn, lambda sizes: float(epochs),
                          "songxinkuan/Machine-unlearning-random-mask (notebook)", hp)
