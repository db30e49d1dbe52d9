"""``forget_cycles``: "Forget" cycles (Jaesin Ahn et al.; LB #9, no prize).

Repeated random-layer re-initialisation followed by logit distillation on the
retain set; D_f is never used (``docs/algorithms.md`` §6.18). Each cycle:

1. re-initialise ``n_layers`` = 6 layers sampled **with replacement** (so at
   most 6 distinct) from a pool of layers that excludes the output layer and
   the projections: ResNet's stem and block convs (``downsample`` excluded); the
   small CNNs' convs; an MLP's hidden Dense layers. The re-drawn leaves are
   the layer's kernel (and bias, if any) with ``reinit_law`` (default:
   torchvision's kaiming normal fan_out; ``'torch_default'`` for U(±1/√fan_in));
   the following BatchNorm is untouched;
2. train on D_r (bs 64) minimising MSE(f_θ(x̃), f_θ₀(x̃)) (torch mean over
   B·C), x̃ = x + N(0, ``input_noise``²) on the normalised input (the scale
   is unstated in the write-up), θ₀ the teacher in eval mode.

Variants: **A** (default) 3 cycles of [1, 2, 2] epochs, each cycle a per-epoch
cosine from 1e-3 with T_max = 2; **B** 4 cycles of [2, 1, 1, 1] epochs with
per-epoch lrs [5e-4, 1e-3, 1e-3, 1e-3, 1e-3]. The optimiser is unstated: SGD
momentum 0.9, wd 5e-4, re-created at every cycle. ``cycle_epochs`` / ``lrs``
override a variant. Metric ``reinit_gates`` is ``[cycles, pool size]`` 0/1.

Sources: Kaggle write-up 458715; junhyunb.github.io project page.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from unlearn_jax.training import engine, steps
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.training.state import TrainState
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

REINIT_STREAM, DATA_STREAM, NOISE_STREAM, REDRAW_STREAM = 0, 1, 2, 3

# Tiny-run settings for the registry contract test (see base.small_overrides).
SMALL_OVERRIDES = dict(cycle_epochs=(1, 1), batch_size=16)

def variant_tables(variant: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
  """``(cycle_epochs, per-epoch lrs)`` of variant A or B."""
  if variant == "A":
    cycles = (1, 2, 2)
    cos = lambda j: 1e-3 * (1 + math.cos(math.pi * j / 2)) / 2  # CosineAnnealingLR(T_max=2), per epoch
    return cycles, tuple(cos(j) for c in cycles for j in range(c))
  if variant == "B":
    return (2, 1, 1, 1), (5e-4, 1e-3, 1e-3, 1e-3, 1e-3)
  raise ValueError(f"forget_cycles variant must be 'A' or 'B', got {variant!r}")


def layer_pool(params) -> list[str]:
  """Modules eligible for re-initialisation: conv layers except projections (or hidden Dense layers)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  convs = [toolkit.module_path(p) for p, x in flat
           if toolkit.is_conv_kernel(p, x) and "downsample" not in toolkit.path_str(p)]
  return convs or toolkit.hidden_dense_modules(params)

HPARAMS = (
    HParam("variant", "str", "A", choices=("A", "B"), doc="reference cycle/learning-rate tables"),
    HParam("n_layers", "int", 6, low=1, doc="layers re-initialised per cycle (with replacement)"),
    HParam("input_noise", "float", 0.1, low=0, traceable=True, doc="σ of the input noise"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("batch_size", "int", 64, low=1, doc="batch size"),
    HParam("reinit_law", "str", "torchvision", choices=("torchvision", "torch_default"), doc="re-initialisation law"),
    HParam("cycle_epochs", "ints", None, low=1, optional=True, doc="epochs per cycle (None: the variant's)"),
    HParam("lrs", "floats", None, low=0, optional=True, doc="per-epoch learning rates (None: the variant's)"),
)


def make(model, variant: str = "A", n_layers: int = 6, input_noise: float = 0.1, momentum: float = 0.9,
         weight_decay: float = 5e-4, batch_size: int = 64, reinit_law: str = "torchvision",
         cycle_epochs: Optional[Sequence[int]] = None, lrs: Optional[Sequence[float]] = None) -> UnlearningMethod:
  """Forget cycles; see the module docstring."""
  cycles, table = variant_tables(variant)
  if cycle_epochs is not None:
    cycles = tuple(int(c) for c in cycle_epochs)
    if lrs is None:
      table = (table + (table[-1],) * sum(cycles))[:sum(cycles)]
  if lrs is not None:
    table = tuple(float(v) for v in lrs)
  if any(c < 1 for c in cycles):
    raise ValueError(f"forget_cycles cycle_epochs must all be >= 1, got {cycles}")
  if len(table) != sum(cycles):
    raise ValueError(f"forget_cycles lrs needs one entry per epoch ({sum(cycles)}), got {len(table)}")
  if reinit_law not in ("torchvision", "torch_default"):
    raise ValueError(f"forget_cycles reinit_law must be 'torchvision' or 'torch_default', got {reinit_law!r}")
  epochs = sum(cycles)
  cycle_of = [c for c, n in enumerate(cycles) for _ in range(n)]
  starts = [int(e == 0 or cycle_of[e] != cycle_of[e - 1]) for e in range(epochs)]
  hp = dict(variant=variant, n_layers=n_layers, input_noise=input_noise, momentum=momentum,
            weight_decay=weight_decay, batch_size=batch_size, reinit_law=reinit_law, cycle_epochs=cycles,
            lrs=table)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    pool = layer_pool(original.params)

    def loss_fn(params, batch_stats, batch, key):
      x, _ = batch
      x = x + input_noise * jax.random.normal(jax.random.fold_in(key, NOISE_STREAM), x.shape, x.dtype)
      logits, stats = steps.apply_train(model, params, batch_stats, x)
      target = jax.lax.stop_gradient(steps.apply_eval(model, original.params, original.batch_stats, x))
      return jnp.mean(jnp.square(logits.astype(jnp.float32) - target.astype(jnp.float32))), (stats, {})

    data_key = jax.random.fold_in(key, DATA_STREAM)

    def epoch_fn(carry, xs):
      params, stats, opt_state = carry
      epoch, lr, cycle, start = xs
      choice = jax.random.randint(jax.random.fold_in(jax.random.fold_in(key, REINIT_STREAM), cycle),
                                  (n_layers,), 0, len(pool))
      gates = toolkit.gates_from_choice(choice, len(pool)) * start
      params = toolkit.reinit_modules(jax.random.fold_in(jax.random.fold_in(key, REDRAW_STREAM), cycle),
                                      params, pool, reinit_law, gates={m: gates[j] for j, m in enumerate(pool)})
      tx = torch_optimizer("sgd", lr, momentum, weight_decay)
      opt_state = jax.tree.map(lambda fresh, old: jnp.where(start > 0, fresh, old), tx.init(params), opt_state)
      step = toolkit.make_step(loss_fn, tx)
      state, loss = engine.run_epoch(step, TrainState(jnp.zeros((), jnp.int32), params, stats, opt_state), data,
                                     data.retain, batch_size, data_key, epoch)
      return (state.params, state.batch_stats, state.opt_state), (loss, gates)

    if epochs == 0:
      return UnlearnResult(original, {"loss": jnp.zeros((0,), jnp.float32),
                                      "reinit_gates": jnp.zeros((0, len(pool)), jnp.float32)})
    tx0 = torch_optimizer("sgd", 1.0, momentum, weight_decay)
    carry = (original.params, original.batch_stats, tx0.init(original.params))
    xs = (jnp.arange(epochs, dtype=jnp.int32), jnp.asarray(table, jnp.float32), jnp.asarray(cycle_of, jnp.int32),
          jnp.asarray(starts, jnp.float32))
    (params, stats, _), (losses, gates) = jax.lax.scan(epoch_fn, carry, xs)
    first = [e for e in range(epochs) if starts[e]]
    return UnlearnResult(ModelState(params, stats), {"loss": losses, "reinit_gates": gates[jnp.asarray(first)]})

  return UnlearningMethod("forget_cycles", unlearn, lambda sizes: float(epochs) * (1.0 + 1.0 / 3.0),
                          "Kaggle 458715 (Forget cycles, Jaesin Ahn et al.); junhyunb.github.io", hp)
