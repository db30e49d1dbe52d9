"""``sun``: Sun (sunkroos)'s entry (7th prize, LB #8).

Reset the output layer, then train only random tensors each epoch while
noising some of them, then fine-tune everything (``docs/algorithms.md`` §6.17). Plain
CE on D_r at bs 64; a **new** SGD (momentum 0.9, wd 5e-4) every epoch; frozen
tensors are excluded by masking the final update, so they get no decay and no
momentum, as torch skips parameters without gradients.

* pool (``pool='torch_name'``, the port): every parameter leaf whose torch
  name lacks ``"bn"`` — conv kernels, ``fc`` weight and bias, and ResNet's
  projection BatchNorm ``downsample.1.*``; ``pool='no_bn'`` also drops the
  projection BN. For the small models: every conv/Dense leaf. Leaves outside
  the pool (the "bn" parameters) always train.
* epoch 0: reset the output layer (ResNet ``fc``, small models ``head``) with
  torch's default init; pick ``k`` = 9 pool leaves without replacement; only
  they and the non-pool leaves train; no noise;
* epochs 1 … ``select_epochs``−1 (1–4): pick ``k`` leaves as above and add
  N(0, σ²), σ = 0.04, to ⌊``noise_fraction``·k⌋ = 6 of the picked leaves
  chosen at random; with ``skip_previously_selected`` (the port) a leaf picked
  in an earlier epoch is not noised, so fewer than 6 may be;
* epochs ``select_epochs`` … (5–8): everything trains.

Learning rates ``lrs`` per epoch: 2e-4 for epochs 0–4, then
[2e-4, 2e-4, 2e-4, 1e-3]. With fewer than ``k`` pool leaves (small models)
every pick takes the whole pool. Picks and noise gates are per-leaf scalars
over the static leaf list, so shapes stay static under ``jit``/``vmap``;
metrics ``picked``/``noised`` are ``[epochs, pool size]`` 0/1 gates.

Sources: Kaggle write-up 459095; Deep Unlearn port ``kgltop7.py`` (values as
copied from the author's notebook).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from unlearn_jax.training import engine
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.training.state import TrainState
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam
from unlearn_jax.unlearning.random_mask import POOLS, pool_mask

RESET_STREAM, PICK_STREAM, NOISE_PICK_STREAM, NOISE_STREAM, DATA_STREAM = 0, 1, 2, 3, 4
REFERENCE_LRS = (2e-4,) * 5 + (2e-4, 2e-4, 2e-4, 1e-3)

# Tiny-run settings for the registry contract test (see base.small_overrides).
SMALL_OVERRIDES = dict(lrs=(2e-4, 2e-4, 1e-3), select_epochs=2, batch_size=16)

HPARAMS = (
    HParam("lrs", "floats", REFERENCE_LRS, low=0, doc="per-epoch learning rates (their count is the epochs)"),
    HParam("select_epochs", "int", 5, low=0, doc="leading epochs that train only selected tensors"),
    HParam("reset_epochs", "int", 1, low=0, doc="leading selection epochs without noise"),
    HParam("k", "int", 9, low=1, doc="tensors selected per epoch"),
    HParam("noise_fraction", "float", 0.7, low=0, high=1, doc="fraction of the selected tensors noised"),
    HParam("noise_std", "float", 0.04, low=0, traceable=True, doc="σ of the tensor noise"),
    HParam("skip_previously_selected", "bool", True, doc="tensors selected before are not noised again"),
    HParam("pool", "str", "torch_name", choices=POOLS, doc="selectable tensors"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("batch_size", "int", 64, low=1, doc="batch size"),
    HParam("epochs", "int", None, low=0, optional=True, doc="truncate/extend lrs to this many epochs (None: len(lrs))"),
)


def make(model, lrs: Sequence[float] = REFERENCE_LRS, select_epochs: int = 5, reset_epochs: int = 1,
         k: int = 9, noise_fraction: float = 0.7, noise_std: float = 0.04,
         skip_previously_selected: bool = True, pool: str = "torch_name", momentum: float = 0.9,
         weight_decay: float = 5e-4, batch_size: int = 64, epochs: Optional[int] = None) -> UnlearningMethod:
  """Sun's random-tensor training; ``epochs`` (if given) truncates/extends ``lrs`` with its last value."""
  if pool not in POOLS:
    raise ValueError(f"sun pool must be one of {POOLS}, got {pool!r}")
  lrs = tuple(float(v) for v in lrs)
  if epochs is not None:
    if epochs < 0:
      raise ValueError(f"sun epochs must be >= 0, got {epochs}")
    lrs = (lrs + (lrs[-1],) * epochs)[:epochs]
  n_epochs = len(lrs)
  hp = dict(lrs=lrs, select_epochs=select_epochs, reset_epochs=reset_epochs, k=k, noise_fraction=noise_fraction,
            noise_std=noise_std, skip_previously_selected=skip_previously_selected, pool=pool,
            momentum=momentum, weight_decay=weight_decay, batch_size=batch_size)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    in_pool = jax.tree.leaves(pool_mask(original.params, pool))
    treedef = jax.tree.structure(original.params)
    pool_idx = [i for i, f in enumerate(in_pool) if f]
    n_pool = len(pool_idx)
    k_eff = min(k, n_pool)
    n_noise = min(int(noise_fraction * k), k_eff)
    params = toolkit.reinit_modules(jax.random.fold_in(key, RESET_STREAM), original.params,
                                    [toolkit.head_module(original.params)], "torch_default")
    data_key = jax.random.fold_in(key, DATA_STREAM)

    def epoch_fn(carry, xs):
      params, stats, prev = carry
      epoch, lr = xs
      selecting = epoch < select_epochs
      noising = selecting & (epoch >= reset_epochs)
      order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, PICK_STREAM), epoch), n_pool)
      picked = toolkit.gates_from_choice(order[:k_eff], n_pool)
      sub = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, NOISE_PICK_STREAM), epoch), k_eff)
      noised = toolkit.gates_from_choice(order[:k_eff][sub[:n_noise]], n_pool)
      if skip_previously_selected:
        noised = noised * (1.0 - prev)
      noised = noised * noising
      picked = jnp.where(selecting, picked, 1.0)
      noise_keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, NOISE_STREAM), epoch), max(n_pool, 1))
      flat = list(jax.tree.leaves(params))
      gates = [jnp.ones((), jnp.float32)] * len(flat)
      for j, i in enumerate(pool_idx):
        flat[i] = flat[i] + noised[j] * noise_std * jax.random.normal(noise_keys[j], flat[i].shape, flat[i].dtype)
        gates[i] = picked[j]
      params = jax.tree.unflatten(treedef, flat)
      tx = torch_optimizer("sgd", lr, momentum, weight_decay)
      step = toolkit.make_step(toolkit.ce_loss(model), tx, update_mask=jax.tree.unflatten(treedef, gates))
      state = TrainState(jnp.zeros((), jnp.int32), params, stats, tx.init(params))
      state, loss = engine.run_epoch(step, state, data, data.retain, batch_size, data_key, epoch)
      prev = jnp.maximum(prev, jnp.where(selecting, picked, 0.0))
      return (state.params, state.batch_stats, prev), (loss, picked, noised)

    if n_epochs == 0:
      empty = jnp.zeros((0, n_pool), jnp.float32)
      return UnlearnResult(ModelState(params, original.batch_stats),
                           {"loss": jnp.zeros((0,), jnp.float32), "picked": empty, "noised": empty})
    carry = (params, original.batch_stats, jnp.zeros((n_pool,), jnp.float32))
    (params, stats, _), (losses, picked, noised) = jax.lax.scan(
        epoch_fn, carry, (jnp.arange(n_epochs, dtype=jnp.int32), jnp.asarray(lrs, jnp.float32)))
    return UnlearnResult(ModelState(params, stats), {"loss": losses, "picked": picked, "noised": noised})

  return UnlearningMethod("sun", unlearn, lambda sizes: float(n_epochs),
                          "Kaggle 459095 (Sun/sunkroos, 7th prize); Deep Unlearn kgltop7.py", hp)
