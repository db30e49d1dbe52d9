"""``oleszko``: Sebastian Oleszko's entry (4th prize, LB #5).

Prune almost everything, re-draw it at random, fine-tune with weighted CE plus
an entropy-matching term, round through fp16 (``docs/algorithms.md`` §6.14):

1. global L1 unstructured pruning, ``amount`` = 0.99, over all conv and Dense
   kernels plus the output layer's bias (ResNet ``fc``; the small models'
   ``head``): the ``round(amount · N)`` smallest |w| are zeroed, as torch's
   ``prune.global_unstructured`` counts them;
2. the zeroed *kernel* entries are re-drawn from U(±1/√fan_in)
   (``reinit_law``); pruned bias entries stay 0; BatchNorm is untouched;
3. ⌊steps_factor × retain batches⌋ (3.2 epochs) SGD steps, stopping mid-epoch:
   lr 5e-4, momentum 0.9, wd 5e-4, constant, bs 64. Loss = torch-weighted CE
   with w_c = n_c^−0.1 (retain counts; absent classes 0) +
   ``entropy_weight`` · MSE(H(p_θ(x)), H(p_θ₀(x))), the per-example predictive
   entropy, θ₀ the frozen teacher in eval mode;
4. params and BatchNorm statistics rounded through fp16 (``fp16``), as
   ``model.half()`` followed by a float evaluation does.

Sources: Kaggle write-up 459148; oleszko.github.io; Deep Unlearn port ``kgltop4.py``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from unlearn_jax.training import losses as losses_lib
from unlearn_jax.training import steps
from unlearn_jax.training.recipes import steps_per_epoch, torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

REINIT_STREAM, DATA_STREAM = 0, 1

# Tiny-run settings for the registry contract test (see base.small_overrides).
SMALL_OVERRIDES = dict(batch_size=16, num_steps=5)

def prunable_mask(params):
  """Bool pytree: conv/Dense kernels and the output layer's bias."""
  head = toolkit.head_module(params)
  return toolkit.leaf_mask(params, lambda p, x: toolkit.is_conv_kernel(p, x) or toolkit.is_dense_kernel(p, x)
                           or (toolkit.module_path(p) == head and toolkit.path_str(p).endswith("bias")))


def global_prune_masks(params, prunable, amount: float):
  """Per-leaf bool masks, True where a prunable entry is pruned (the global ``round(amount·N)`` smallest |w|)."""
  leaves, treedef = jax.tree.flatten(params)
  flags = jax.tree.leaves(prunable)
  mags = [jnp.abs(x).reshape(-1) for x, f in zip(leaves, flags) if f]
  total = sum(int(m.size) for m in mags)
  n_prune = int(round(amount * total))
  joint = jnp.concatenate(mags)
  # Select the (few) survivors with top_k: cheaper than ranking the pruned majority.
  n_keep = total - n_prune
  if n_keep > 0:
    _, idx = jax.lax.top_k(joint, n_keep)
    pruned = jnp.ones(joint.shape, bool).at[idx].set(False)
  else:
    pruned = jnp.ones(joint.shape, bool)
  return jax.tree.unflatten(treedef, toolkit.split_joint(pruned, leaves, flags))


def entropy(logits: jax.Array) -> jax.Array:
  """Per-example entropy of softmax(logits)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -(jnp.exp(logp) * logp).sum(-1)

HPARAMS = (
    HParam("amount", "float", 0.99, low=0, high=1, doc="fraction of weights pruned and re-drawn"),
    HParam("steps_factor", "float", 3.2, low=0, doc="fine-tuning steps in retain epochs"),
    HParam("lr", "float", 5e-4, low=0, traceable=True, doc="SGD learning rate"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("batch_size", "int", 64, low=1, doc="batch size"),
    HParam("class_weight_power", "float", -0.1, traceable=True, doc="class weights n_c ** power"),
    HParam("entropy_weight", "float", 1.0, low=0, traceable=True, doc="weight of the entropy-matching MSE"),
    HParam("reinit_law", "str", "torch_default", choices=("torch_default", "torchvision"),
           doc="law of the re-drawn weights"),
    HParam("fp16", "bool", True, doc="round the result through float16"),
    HParam("num_steps", "int", None, low=0, optional=True, doc="fine-tuning steps (None: steps_factor × batches)"),
)


def make(model, amount: float = 0.99, steps_factor: float = 3.2, lr: float = 5e-4, momentum: float = 0.9,
         weight_decay: float = 5e-4, batch_size: int = 64, class_weight_power: float = -0.1,
         entropy_weight: float = 1.0, reinit_law: str = "torch_default", fp16: bool = True,
         num_steps=None) -> UnlearningMethod:
  """Oleszko's prune / re-draw / fine-tune; ``num_steps`` overrides ⌊steps_factor × retain batches⌋."""
  if not 0.0 <= amount <= 1.0:
    raise ValueError(f"oleszko amount must be in [0, 1], got {amount}")
  if reinit_law not in ("torch_default", "torchvision"):
    raise ValueError(f"oleszko reinit_law must be 'torch_default' or 'torchvision', got {reinit_law!r}")
  hp = dict(amount=amount, steps_factor=steps_factor, lr=lr, momentum=momentum, weight_decay=weight_decay,
            batch_size=batch_size, class_weight_power=class_weight_power, entropy_weight=entropy_weight,
            reinit_law=reinit_law, fp16=fp16, num_steps=num_steps)

  def total_steps(n_retain: int) -> int:
    if num_steps is not None:
      return int(num_steps)
    return int(math.floor(steps_factor * steps_per_epoch(n_retain, batch_size)))

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    params0 = original.params
    pruned = global_prune_masks(params0, prunable_mask(params0), amount)
    keys = toolkit.keys_like(jax.random.fold_in(key, REINIT_STREAM), params0)
    params = jax.tree.map(
        lambda x, m, k: jnp.where(m, toolkit.reinit_leaf(k, x, 1, reinit_law) if x.ndim >= 2 else 0.0, x),
        params0, pruned, keys)
    counts = data.class_counts("retain")
    weights = jnp.where(counts > 0, jnp.maximum(counts, 1.0) ** class_weight_power, 0.0)

    def loss_fn(params, batch_stats, batch, key):
      del key
      x, y = batch
      logits, new_stats = steps.apply_train(model, params, batch_stats, x)
      teacher = jax.lax.stop_gradient(steps.apply_eval(model, original.params, original.batch_stats, x))
      ce = losses_lib.cross_entropy(logits, y, weights)
      mse = jnp.mean(jnp.square(entropy(logits) - entropy(teacher)))
      return ce + entropy_weight * mse, (new_stats, {})

    tx = torch_optimizer("sgd", lr, momentum, weight_decay)
    step = toolkit.make_step(loss_fn, tx)
    state, losses = toolkit.run_steps(step, toolkit.start(ModelState(params, original.batch_stats), tx),
                                      data, data.retain, batch_size, total_steps(data.retain.shape[0]),
                                      jax.random.fold_in(key, DATA_STREAM))
    out = toolkit.finish(state)
    if fp16:
      out = ModelState(toolkit.fp16_round_trip(out.params), toolkit.fp16_round_trip(out.batch_stats))
    return UnlearnResult(out, {"loss": losses})

  def cost(sizes) -> float:
    epochs = total_steps(sizes.retain) / steps_per_epoch(max(sizes.retain, 1), batch_size)
    return epochs * (1.0 + 1.0 / 3.0)

  return UnlearningMethod("oleszko", unlearn, cost,
                          "Kaggle 459148 (Sebastian Oleszko, 4th prize); oleszko.github.io; Deep Unlearn kgltop4.py",
                          hp)
