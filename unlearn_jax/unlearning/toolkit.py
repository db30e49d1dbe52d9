"""The public toolkit the built-in unlearning methods are written with; use it for your own.

A method is ``make(model, **hyperparameters) -> UnlearningMethod`` whose
``unlearn(original, data, key)`` is one pure per-seed JAX function (see
:mod:`unlearn_jax.unlearning.base`; ``examples/kl_finetune.py`` is a complete one
written outside the package). These helpers keep such a function short and
torch-faithful:

* **steps and loops**: :data:`LossFn` (``loss_fn(params, batch_stats, batch, key) ->
  (loss, (new_batch_stats, metrics))``), :func:`make_step` (a step from any loss,
  optionally with a final-update mask or a gradient scale), :func:`ce_loss`,
  :func:`negated`, :func:`forward`; :func:`start` / :func:`finish` between
  :class:`~unlearn_jax.unlearning.base.ModelState` and a training state;
  :func:`run_epochs` (shuffled passes, epoch ``e`` ordered by
  ``permutation(fold_in(fold_in(key, e), 0))``), :func:`run_steps` (a step budget that
  stops mid-epoch), :func:`run_batches` (already-ordered examples),
  :func:`epoch_order`, :func:`cycled_batches`;
* **gradients and losses**: :func:`sum_gradients` (Σ of per-batch gradients, BatchNorm
  statistics threaded), :func:`l2_to`, :func:`distill_kl`;
* **schedules**: :func:`epoch_cosine_schedule`, :func:`epoch_table_lr`;
* **parameter paths**: :func:`path_str`, :func:`module_path`, :func:`torch_name`,
  :func:`leaf_names`, :func:`leaf_mask`, :func:`is_conv_kernel`, :func:`is_dense_kernel`,
  :func:`is_batchnorm`, :func:`head_module`, :func:`stem_module`,
  :func:`hidden_dense_modules`, :func:`split_joint`, :func:`fp16_round_trip`;
* **re-initialisation** with torch's laws: :func:`reinit_modules` (optionally gated per
  module under ``jit``/``vmap``), :func:`reinit_leaf`, :func:`torch_default_reinit`,
  :func:`torchvision_reinit`, :func:`bias_reinit`, :func:`fan_in`,
  :func:`module_fan_ins`, :func:`keys_like`, :func:`gates_from_choice`;
* **hyperparameters**: :class:`~unlearn_jax.unlearning.hparams.HParam` declarations and
  :func:`~unlearn_jax.unlearning.hparams.resolve_preset` (named reference settings whose
  fields a user overrides one by one), re-exported here.

Every helper is a pure function of its arguments (randomness only from the keys
given), so it composes with ``jit``, ``vmap`` over seeds, and ``lax.scan``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from unlearn_jax.models.layers import torch_conv_init, torch_default_init
from unlearn_jax.training import engine, losses, steps
from unlearn_jax.training.recipes import per_epoch_cosine, steps_per_epoch
from unlearn_jax.training.state import TrainState
from unlearn_jax.unlearning.base import ModelState
from unlearn_jax.unlearning.hparams import HParam, resolve_preset

__all__ = [
    "LossFn", "make_step", "forward", "ce_loss", "negated", "run_epochs", "start", "finish", "path_str",
    "torch_name", "is_conv_kernel", "is_dense_kernel", "is_batchnorm", "leaf_mask", "leaf_names", "fan_in",
    "torchvision_reinit", "torch_default_reinit", "bias_reinit", "keys_like", "epoch_order", "cycled_batches",
    "run_batches", "l2_to", "distill_kl", "epoch_table_lr", "module_path", "head_module", "hidden_dense_modules",
    "stem_module", "reinit_leaf", "module_fan_ins", "reinit_modules", "gates_from_choice", "epoch_cosine_schedule",
    "run_steps", "sum_gradients", "fp16_round_trip", "split_joint", "HParam", "resolve_preset",
]

# ---------------------------------------------------------------- steps and loops

# loss_fn(params, batch_stats, batch, key) -> (loss, (new_batch_stats, metrics dict))
LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation, update_mask: Any = None,
              grad_scale: Any = None):
  """``step(state, batch, key) -> (state, metrics)`` minimising ``loss_fn``.

  Args:
    update_mask: optional pytree of 0/1 (or bool) like params: the *final*
      update is multiplied by it, so masked parameters stay exactly where they
      are (no decay, no momentum), as torch does for frozen parameters.
    grad_scale: optional pytree multiplying the gradient before the optimiser
      chain (so decay is unscaled), as a torch gradient hook does.
  """

  def step(state: TrainState, batch, key):
    (loss, (new_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, batch, key)
    if grad_scale is not None:
      grads = jax.tree.map(lambda g, s: g * s, grads, grad_scale)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if update_mask is not None:
      updates = jax.tree.map(lambda u, m: u * m, updates, update_mask)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss)
    return TrainState(state.step + 1, params, new_stats, opt_state), metrics

  return step


def forward(model, params, batch_stats, x, bn_train: bool):
  """``(logits, batch_stats)``: a train-mode pass (stats updated) or an eval-mode one (stats unchanged)."""
  if bn_train:
    return steps.apply_train(model, params, batch_stats, x)
  return steps.apply_eval(model, params, batch_stats, x), batch_stats


def ce_loss(model, class_weights=None, bn_train: bool = True) -> LossFn:
  """Plain (or class-weighted) cross-entropy on ``batch = (x, y)``."""

  def loss_fn(params, batch_stats, batch, key):
    del key
    x, y = batch
    logits, new_stats = forward(model, params, batch_stats, x, bn_train)
    return losses.cross_entropy(logits, y, class_weights), (new_stats, {})

  return loss_fn


def negated(loss_fn: LossFn) -> LossFn:
  """``loss_fn`` with its loss negated (gradient ascent), aux unchanged."""

  def neg(params, batch_stats, batch, key):
    loss, aux = loss_fn(params, batch_stats, batch, key)
    return -loss, aux

  return neg


def run_epochs(step, state: TrainState, data, indices: jax.Array, batch_size: int, epochs: int,
               key: jax.Array, epoch_offset: int = 0):
  """``epochs`` shuffled passes of ``step`` over ``indices``; returns ``(state, [epochs] losses)``.

  Epoch ``e`` uses the order ``permutation(fold_in(fold_in(key, e + epoch_offset), 0))``.
  """
  if epochs == 0:
    return state, jnp.zeros((0,), jnp.float32)

  def body(state, epoch):
    return engine.run_epoch(step, state, data, indices, batch_size, key, epoch)

  return jax.lax.scan(body, state, jnp.arange(epoch_offset, epoch_offset + epochs, dtype=jnp.int32))


def start(original: ModelState, tx: optax.GradientTransformation) -> TrainState:
  """A fresh :class:`TrainState` at the original weights (new optimiser state)."""
  return TrainState.create(original.params, original.batch_stats, tx)


def finish(state: TrainState) -> ModelState:
  """The :class:`ModelState` (params, BatchNorm statistics) a training state ends at."""
  return ModelState(state.params, state.batch_stats)


# ---------------------------------------------------------------- parameter trees


def path_str(path) -> str:
  """``'layer1_0/conv1/kernel'`` from a ``tree_util`` key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def torch_name(path) -> str:
  """The torchvision ``state_dict`` name of a parameter path (``layer1.0.downsample.1.weight``)."""
  parts = path_str(path).split("/")
  leaf = parts[-1]
  mods = []
  for p in parts[:-1]:
    if "_" in p and p.startswith("layer"):
      mods.extend(p.split("_"))
    elif p == "downsample_conv":
      mods.extend(["downsample", "0"])
    elif p == "downsample_bn":
      mods.extend(["downsample", "1"])
    else:
      mods.append(p)
  leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}.get(leaf, leaf)
  return ".".join(mods + [leaf])


def is_conv_kernel(path, leaf) -> bool:
  """A convolution kernel: a 4-D ``kernel`` leaf."""
  return path_str(path).endswith("kernel") and leaf.ndim == 4


def is_dense_kernel(path, leaf) -> bool:
  """A Dense kernel: a 2-D ``kernel`` leaf."""
  return path_str(path).endswith("kernel") and leaf.ndim == 2


def is_batchnorm(path, leaf) -> bool:
  """A BatchNorm scale/bias (1-D leaf under a module whose name contains 'bn')."""
  return leaf.ndim == 1 and "bn" in path_str(path).rsplit("/", 1)[0]


def leaf_mask(params, predicate: Callable[[Any, jax.Array], bool]):
  """A pytree of Python bools like ``params``: ``predicate(path, leaf)`` per leaf."""
  return jax.tree_util.tree_map_with_path(lambda p, x: bool(predicate(p, x)), params)


def leaf_names(params) -> list[str]:
  """Paths of all leaves in tree order."""
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def fan_in(leaf: jax.Array) -> int:
  """torch fan-in: ``I*kh*kw`` for a conv kernel ``(kh,kw,I,O)``, ``I`` for a dense ``(I,O)``."""
  return math.prod(leaf.shape[:-1])


def torchvision_reinit(key: jax.Array, leaf: jax.Array) -> jax.Array:
  """A fresh draw of a conv kernel with torchvision's init (kaiming normal, fan_out)."""
  return torch_conv_init(key, leaf.shape, leaf.dtype)


def torch_default_reinit(key: jax.Array, leaf: jax.Array) -> jax.Array:
  """A fresh draw with torch's default ``reset_parameters`` law U(±1/sqrt(fan_in)).

  For weights and, given the owning layer's fan-in via ``bias_fan_in``, biases.
  """
  return torch_default_init(key, leaf.shape, leaf.dtype)


def bias_reinit(key: jax.Array, leaf: jax.Array, fan_in_: int) -> jax.Array:
  """A fresh bias with torch's law U(±1/sqrt(fan_in_)), ``fan_in_`` the owning layer's."""
  bound = 1.0 / math.sqrt(fan_in_)
  return jax.random.uniform(key, leaf.shape, leaf.dtype, -bound, bound)


def keys_like(key: jax.Array, tree) -> Any:
  """One independent key per leaf of ``tree`` (``fold_in(key, leaf_index)``)."""
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, [jax.random.fold_in(key, i) for i in range(len(leaves))])


# ---------------------------------------------------------------- baselines: ordered passes, paired batches


def epoch_order(key: jax.Array, epoch, n: int) -> jax.Array:
  """The visiting order of epoch ``epoch`` over ``n`` items, as :func:`run_epochs` draws it."""
  return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, epoch), 0), n)


def cycled_batches(order: jax.Array, num_batches: int, batch_size: int) -> jax.Array:
  """``[num_batches, batch_size]`` consecutive batches of ``order``, wrapping around its end.

  Pairs a second loader with the batches of a first one (``zip(a, cycle(b))``)
  under fixed shapes; every batch is full (no short remainder batch).
  """
  pos = jnp.arange(num_batches * batch_size) % order.shape[0]
  return order[pos].reshape(num_batches, batch_size)


def run_batches(step, state: TrainState, examples, batch_size: int, key: jax.Array, per_step=None):
  """One pass of ``step`` over already-ordered per-example arrays; returns ``(state, mean loss)``.

  ``examples`` is a pytree of arrays with a leading axis of length n (e.g.
  dataset indices plus per-example flags), cut into ``n // batch_size`` full
  batches (a ``lax.scan``) and one remainder batch of its own static shape, as
  a torch loader with ``drop_last=False``. ``step(state, batch, key)`` receives
  the example batch, or ``(example batch, per_step item)`` when ``per_step``
  (a pytree with leading axis ``ceil(n / batch_size)``) is given, and gathers
  its own inputs. The mean loss weights each batch by its size.
  """
  n = jax.tree.leaves(examples)[0].shape[0]
  nb, rem = divmod(n, batch_size)
  keys = jax.random.split(key, nb + 1)

  def body(state, xs):
    batch, extra, k = xs
    state, metrics = step(state, batch if per_step is None else (batch, extra), k)
    return state, metrics["loss"]

  extras = per_step if per_step is not None else jnp.zeros((nb + (1 if rem else 0),), jnp.float32)
  total = jnp.zeros((), jnp.float32)
  if nb:
    full = jax.tree.map(lambda a: a[: nb * batch_size].reshape(nb, batch_size, *a.shape[1:]), examples)
    state, losses_ = jax.lax.scan(body, state, (full, jax.tree.map(lambda a: a[:nb], extras), keys[:nb]))
    total = losses_.sum() * batch_size
  if rem:
    last = jax.tree.map(lambda a: a[nb * batch_size:], examples)
    state, loss = body(state, (last, jax.tree.map(lambda a: a[nb], extras), keys[nb]))
    total = total + loss * rem
  return state, total / n


def l2_to(params, anchor) -> jax.Array:
  """``‖params − anchor‖²`` over all leaves (for an L2-to-init penalty ``(λ/2)‖θ−θ₀‖²``)."""
  return sum(jnp.sum(jnp.square(p - a)) for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(anchor)))


def distill_kl(teacher_logits: jax.Array, student_logits: jax.Array, temperature: float) -> jax.Array:
  """RepDistiller's ``DistillKL(T)``: ``T² · batchmean KL(p_teacher^T ‖ p_student^T)``."""
  return losses.kl_divergence(teacher_logits, student_logits, temperature, "batchmean") * temperature ** 2


def epoch_table_lr(lrs, epoch_starts):
  """``count -> lr`` from per-epoch rates ``lrs`` and the (static) step counts at which epochs start.

  For loops whose epochs have different step counts (e.g. SCRUB's max+min
  epochs sharing one optimiser), so the rate follows the epoch, not the step.
  """
  lrs = jnp.asarray(lrs, jnp.float32)
  starts = jnp.asarray(epoch_starts, jnp.int32)
  return lambda count: lrs[jnp.clip(jnp.searchsorted(starts, count, side="right") - 1, 0, lrs.shape[0] - 1)]


# ---------------------------------------------------------------- layer roles, gates, step budgets
# (used by the competition entries; generic over the model registry)


def module_path(path) -> str:
  """The owning module of a leaf: ``'layer1_0/conv1'`` for ``'layer1_0/conv1/kernel'``."""
  return path_str(path).rsplit("/", 1)[0]


def head_module(params) -> str:
  """The output layer's module: top-level ``fc`` (ResNet) or ``head`` (small models).

  Falls back to the module of the last 2-D kernel in tree order.
  """
  dense = [module_path(p) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
           if is_dense_kernel(p, x)]
  for name in ("fc", "head"):
    if name in dense:
      return name
  if not dense:
    raise ValueError("params has no Dense kernel, so no output layer to find")
  return dense[-1]


def hidden_dense_modules(params) -> list[str]:
  """Modules of the Dense kernels other than the output layer, in tree order."""
  head = head_module(params)
  return [module_path(p) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
          if is_dense_kernel(p, x) and module_path(p) != head]


def stem_module(params) -> str:
  """The stem layer's module: the first conv kernel in tree order (ResNet ``conv1``).

  For a model without convolutions (MLP) it is the first Dense layer that is not the head.
  """
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  convs = [module_path(p) for p, x in flat if is_conv_kernel(p, x)]
  if convs:
    return convs[0]
  dense = hidden_dense_modules(params)
  if not dense:
    raise ValueError("params has neither a conv kernel nor a hidden Dense layer to act as the stem")
  return dense[0]


def reinit_leaf(key: jax.Array, leaf: jax.Array, module_fan_in: int, law: str = "torch_default") -> jax.Array:
  """A fresh draw of one weight/bias leaf of a conv or Dense layer.

  Kernels (ndim >= 2) use ``law``: ``'torch_default'`` (U(±1/√fan_in), torch's
  ``reset_parameters``) or ``'torchvision'`` (kaiming normal, fan_out, the
  torchvision conv init). 1-D leaves are biases and use U(±1/√module_fan_in).
  """
  if leaf.ndim == 1:
    return bias_reinit(key, leaf, module_fan_in)
  if law == "torch_default":
    return torch_default_reinit(key, leaf)
  if law == "torchvision":
    return torchvision_reinit(key, leaf)
  raise ValueError(f"unknown re-init law {law!r}; expected 'torch_default' or 'torchvision'")


def module_fan_ins(params) -> dict[str, int]:
  """``module -> fan_in`` of every module with a conv/Dense kernel."""
  return {module_path(p): fan_in(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
          if is_conv_kernel(p, x) or is_dense_kernel(p, x)}


def reinit_modules(key: jax.Array, params, modules, law: str = "torch_default", gates=None):
  """Re-draws every leaf (kernel and bias) of the conv/Dense ``modules``.

  ``gates`` (optional) maps a module to a scalar 0/1 (traced is fine): the
  module is replaced only where its gate is 1, so a random subset of a static
  module list can be re-initialised under ``jit``/``vmap``. Leaf ``i`` draws
  from ``fold_in(key, i)``.
  """
  fans = module_fan_ins(params)
  modules = list(modules)
  missing = [m for m in modules if m not in fans]
  if missing:
    raise ValueError(f"modules {missing} have no conv/Dense kernel; expected some of {sorted(fans)}")
  keys = keys_like(key, params)

  def one(path, leaf, k):
    mod = module_path(path)
    if mod not in modules:
      return leaf
    fresh = reinit_leaf(k, leaf, fans[mod], law)
    if gates is None:
      return fresh
    return jnp.where(jnp.asarray(gates[mod]) > 0, fresh, leaf)

  return jax.tree_util.tree_map_with_path(one, params, keys)


def gates_from_choice(chosen: jax.Array, n: int) -> jax.Array:
  """``[n]`` float 0/1 vector with 1 at the (possibly repeated) indices ``chosen``."""
  return jnp.zeros((n,), jnp.float32).at[chosen].set(1.0)


def epoch_cosine_schedule(lr: float, epochs: int, steps_in_epoch: int):
  """``count -> lr`` of torch ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch of ``steps_in_epoch`` steps."""
  epoch_lr = per_epoch_cosine(lr, epochs)
  return lambda count: epoch_lr(count // steps_in_epoch)


def run_steps(step, state: TrainState, data, indices: jax.Array, batch_size: int, n_steps: int,
              key: jax.Array):
  """Exactly ``n_steps`` steps over shuffled epochs of ``indices``, stopping mid-epoch.

  Full epochs run as :func:`run_epochs` (same orders, remainder batch kept);
  the last, partial epoch takes the first batches of its own order, which are
  all full batches. Returns ``(state, [ceil(n_steps / batches_per_epoch)] losses)``
  (mean loss per epoch; the partial one over its own steps).
  """
  per_epoch = steps_per_epoch(indices.shape[0], batch_size)
  full, rest = divmod(n_steps, per_epoch)
  state, losses = run_epochs(step, state, data, indices, batch_size, full, key)
  if rest:
    epoch_key = jax.random.fold_in(key, full)
    order = indices[jax.random.permutation(jax.random.fold_in(epoch_key, 0), indices.shape[0])]
    step_keys = jax.random.split(jax.random.fold_in(epoch_key, 1), per_epoch + 1)[:rest]

    def body(state, xs):
      idx, k = xs
      state, metrics = step(state, data.gather(idx), k)
      return state, metrics["loss"]

    state, part = jax.lax.scan(body, state, (order[: rest * batch_size].reshape(rest, batch_size), step_keys))
    losses = jnp.concatenate([losses, part.mean()[None]])
  return state, losses


def sum_gradients(loss_fn: LossFn, params, batch_stats, data, indices: jax.Array, batch_size: int,
                  key: jax.Array):
  """Σ over the batches of ``indices`` (in order, remainder kept) of ``∇loss_fn``.

  BatchNorm statistics are threaded through the passes, as repeated torch
  train-mode forwards do. Returns ``(grads, batch_stats)``.
  """
  n = indices.shape[0]
  nb, rem = divmod(n, batch_size)
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def body(carry, idx):
    acc, stats = carry
    g, (stats, _) = grad_fn(params, stats, data.gather(idx), key)
    return (jax.tree.map(jnp.add, acc, g), stats), None

  carry = (jax.tree.map(jnp.zeros_like, params), batch_stats)
  if nb:
    carry, _ = jax.lax.scan(body, carry, indices[: nb * batch_size].reshape(nb, batch_size))
  if rem:
    carry, _ = body(carry, indices[nb * batch_size:])
  return carry


def fp16_round_trip(tree):
  """Every floating leaf cast to float16 and back (a torch ``.half()`` round trip)."""
  return jax.tree.map(lambda x: x.astype(jnp.float16).astype(x.dtype)
                      if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def split_joint(joint: jax.Array, leaves, flags, fill=False) -> list:
  """Cuts a flat array over the flagged ``leaves`` (concatenated in order) back into leaf shapes.

  Unflagged leaves get an array of ``fill`` of their shape. The inverse of
  ``jnp.concatenate([x.reshape(-1) for x, f in zip(leaves, flags) if f])``.
  """
  out, offset = [], 0
  for x, f in zip(leaves, flags):
    if f:
      out.append(joint[offset: offset + x.size].reshape(x.shape))
      offset += x.size
    else:
      out.append(jnp.full(x.shape, fill, joint.dtype))
  return out
