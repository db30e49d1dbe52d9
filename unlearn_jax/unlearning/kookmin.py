"""``kookmin``: "Masked Small Gradients" (Kookmin Univ.; 2nd prize, LB #3).

Re-initialise the conv weights least implicated by a retain-minus-forget
gradient, then fine-tune with damped updates on the kept weights
(``docs/algorithms.md`` §6.12):

1. draw a per-seed random retain subset of size |D_f| (the authors report that
   this randomness matters);
2. G = Σ_batches ∇CE(retain subset) + Σ_batches ∇[−CE(forget)] at bs 64, the
   student in train mode (BatchNorm statistics threaded, as torch's forwards do);
3. in every conv kernel (ResNet stem, blocks and 1×1 projections; every conv of
   the small CNNs; an MLP has none, so nothing is re-drawn) re-draw the
   ``ratio`` = 30% entries with the smallest |G| from torchvision's init
   (kaiming normal, fan_out); ``mask_scope='layer'`` ranks within each kernel
   (the port), ``'global'`` ranks over all conv entries at once (the write-up's
   "globally unstructured");
4. fine-tune with CE on D_r for 5 epochs, SGD lr 1e-3, momentum 0.9, wd 5e-4,
   per-epoch lr factors [1/3, 2/3, 1, 2/3, 1/3]: the entry's ``LinearAnnealingLR``
   (warm-up over ``(E+1)//2`` epochs, then linear decay towards 0 at epoch E+1),
   for every epoch count E (:func:`lr_factors`). Conv gradients are scaled ×1 on re-drawn and
   ×``kept_grad_scale`` = 0.1 on kept entries before the optimiser (decay unscaled).

Sources: Kaggle write-up 459200; Deep Unlearn port ``kgltop2.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unlearn_jax.training.recipes import steps_per_epoch, torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

SUBSET_STREAM, FORGET_ORDER_STREAM, REINIT_STREAM, DATA_STREAM = 0, 1, 2, 3
MASK_SCOPES = ("layer", "global")

# Tiny-run settings for the registry contract test (see base.small_overrides).
SMALL_OVERRIDES = dict(epochs=1, batch_size=16)

def lr_factors(epochs: int) -> list[float]:
  """The entry's per-epoch factors: ``LinearAnnealingLR(num_annealing_steps=A, num_total_steps=E+1)``
  with ``A = (E+1) // 2``, stepped once per epoch.

  A torch scheduler takes its first step on construction, so epoch ``e`` (from 0) runs
  at step count ``c = e + 1``: factor ``c / A`` while ``c <= A``, then
  ``(E + 1 - c) / (E + 1 - A)``. E = 5 gives [1/3, 2/3, 1, 2/3, 1/3]; E = 4 gives
  [1/2, 1, 2/3, 1/3].
  """
  if epochs < 1:
    raise ValueError(f"kookmin epochs must be >= 1, got {epochs}")
  peak, total = (epochs + 1) // 2, epochs + 1
  return [(e + 1) / peak if e + 1 <= peak else (total - (e + 1)) / (total - peak) for e in range(epochs)]


def smallest_mask(scores: jax.Array, count: int) -> jax.Array:
  """Bool mask (shape of ``scores``) of exactly ``count`` entries with the smallest score."""
  flat = scores.reshape(-1)
  if count <= 0:
    return jnp.zeros(scores.shape, bool)
  _, idx = jax.lax.top_k(-flat, count)
  return jnp.zeros(flat.shape, bool).at[idx].set(True).reshape(scores.shape)


def reinit_masks(grads, ratio: float, scope: str):
  """Per-leaf bool masks: True on conv-kernel entries to re-draw (others all False)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(grads)
  is_conv = [toolkit.is_conv_kernel(p, g) for p, g in flat]
  if scope == "layer":
    masks = [smallest_mask(jnp.abs(g), int(round(ratio * g.size))) if c else jnp.zeros(g.shape, bool)
             for (p, g), c in zip(flat, is_conv)]
  else:
    convs = [jnp.abs(g).reshape(-1) for (p, g), c in zip(flat, is_conv) if c]
    total = sum(int(c.size) for c in convs)
    joint = smallest_mask(jnp.concatenate(convs), int(round(ratio * total))) if convs else jnp.zeros((0,), bool)
    masks = toolkit.split_joint(joint, [g for _, g in flat], is_conv)
  return jax.tree.unflatten(treedef, masks)

HPARAMS = (
    HParam("ratio", "float", 0.3, low=0, high=1, doc="fraction of conv entries re-initialised"),
    HParam("epochs", "int", 5, low=1, doc="fine-tuning epochs"),
    HParam("lr", "float", 1e-3, low=0, traceable=True, doc="SGD learning rate (times the per-epoch factor)"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("batch_size", "int", 64, low=1, doc="batch size"),
    HParam("kept_grad_scale", "float", 0.1, low=0, traceable=True, doc="gradient scale on kept conv entries"),
    HParam("mask_scope", "str", "layer", choices=MASK_SCOPES, doc="rank per layer or globally"),
    HParam("grad_bn_mode", "str", "train", choices=("train", "eval"), doc="BatchNorm mode while collecting G"),
    HParam("lr_factor_table", "floats", None, low=0, optional=True,
           doc="per-epoch learning-rate factors, one per epoch (None: the entry's LinearAnnealingLR)"),
)


def make(model, ratio: float = 0.3, epochs: int = 5, lr: float = 1e-3, momentum: float = 0.9,
         weight_decay: float = 5e-4, batch_size: int = 64, kept_grad_scale: float = 0.1,
         mask_scope: str = "layer", grad_bn_mode: str = "train", lr_factor_table=None) -> UnlearningMethod:
  """Masked Small Gradients; see the module docstring. ``lr_factor_table`` overrides the per-epoch factors."""
  if mask_scope not in MASK_SCOPES:
    raise ValueError(f"kookmin mask_scope must be one of {MASK_SCOPES}, got {mask_scope!r}")
  if grad_bn_mode not in ("train", "eval"):
    raise ValueError(f"kookmin grad_bn_mode must be 'train' or 'eval', got {grad_bn_mode!r}")
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f"kookmin ratio must be in [0, 1], got {ratio}")
  factors = list(lr_factor_table) if lr_factor_table is not None else lr_factors(epochs)
  if len(factors) != epochs:
    raise ValueError(f"kookmin lr_factor_table needs {epochs} entries (one per epoch), got {len(factors)}")
  hp = dict(ratio=ratio, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
            batch_size=batch_size, kept_grad_scale=kept_grad_scale, mask_scope=mask_scope,
            grad_bn_mode=grad_bn_mode, lr_factors=tuple(factors))
  retain_ce = toolkit.ce_loss(model, bn_train=grad_bn_mode == "train")
  forget_neg_ce = toolkit.negated(retain_ce)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    n_sub = min(data.forget.shape[0], data.retain.shape[0])
    subset = data.retain[jax.random.permutation(jax.random.fold_in(key, SUBSET_STREAM),
                                                data.retain.shape[0])[:n_sub]]
    forget = data.forget[jax.random.permutation(jax.random.fold_in(key, FORGET_ORDER_STREAM),
                                                data.forget.shape[0])]
    g_r, stats = toolkit.sum_gradients(retain_ce, original.params, original.batch_stats, data, subset,
                                       batch_size, key)
    g_f, stats = toolkit.sum_gradients(forget_neg_ce, original.params, stats, data, forget, batch_size, key)
    grads = jax.tree.map(jnp.add, g_r, g_f)
    masks = reinit_masks(grads, ratio, mask_scope)
    keys = toolkit.keys_like(jax.random.fold_in(key, REINIT_STREAM), original.params)
    params = jax.tree.map(lambda x, m, k: jnp.where(m, toolkit.torchvision_reinit(k, x), x) if x.ndim == 4 else x,
                          original.params, masks, keys)
    grad_scale = jax.tree_util.tree_map_with_path(
        lambda p, m, x: jnp.where(m, 1.0, kept_grad_scale) if toolkit.is_conv_kernel(p, x)
        else jnp.ones((), jnp.float32), masks, params)
    n_steps = steps_per_epoch(data.retain.shape[0], batch_size)
    tx = torch_optimizer("sgd", toolkit.epoch_table_lr([lr * f for f in factors],
                                                                [e * n_steps for e in range(epochs)]),
                         momentum, weight_decay)
    step = toolkit.make_step(toolkit.ce_loss(model), tx, grad_scale=grad_scale)
    state, losses = toolkit.run_epochs(step, toolkit.start(ModelState(params, stats), tx), data, data.retain,
                                       batch_size, epochs, jax.random.fold_in(key, DATA_STREAM))
    conv_masks = [m for m in jax.tree.leaves(masks) if m.ndim == 4]
    fraction = (jnp.stack([m.mean() for m in conv_masks]) if conv_masks else jnp.zeros((0,), jnp.float32))
    return UnlearnResult(toolkit.finish(state), {"loss": losses, "reinit_fraction": fraction})

  def cost(sizes) -> float:
    return float(epochs) + 2.0 * sizes.forget / max(sizes.retain, 1)

  return UnlearningMethod("kookmin", unlearn, cost,
                          "Kaggle 459200 (Kookmin Univ., Masked Small Gradients); Deep Unlearn kgltop2.py", hp)
