"""Pure training and evaluation steps.

``make_train_step`` returns ``step(state, batch, key) -> (state, metrics)``:
one optimiser update on ``batch = (images, labels)``, with ``key`` used for
data augmentation only. The model runs in train mode, so BatchNorm statistics
are updated (per seed under a vmap: nothing is averaged across seeds).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from unlearn_jax.training import losses
from unlearn_jax.training.state import TrainState


def apply_train(model, params, batch_stats, x):
  """Train-mode forward: ``(logits, new_batch_stats)``."""
  logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"])
  return logits, updates.get("batch_stats", batch_stats)


def apply_eval(model, params, batch_stats, x):
  """Eval-mode forward (running statistics, nothing mutable): logits."""
  return model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)


def crop_flip(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
  """Random crop with ``pad`` zero padding and a random horizontal flip, per image."""
  b, h, w, _ = x.shape
  k_off, k_flip = jax.random.split(key)
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(k_off, (b, 2), 0, 2 * pad + 1)
  crop = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1])))
  x = crop(padded, offsets)
  flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1, :], x)


def make_train_step(
    model,
    tx: optax.GradientTransformation,
    class_weights: Optional[jax.Array] = None,
    augment: str = "none",
):
  """A supervised cross-entropy step (weighted when ``class_weights`` is given)."""

  def loss_fn(params, batch_stats, x, y):
    logits, new_stats = apply_train(model, params, batch_stats, x)
    loss = losses.cross_entropy(logits, y, class_weights)
    return loss, (new_stats, logits)

  def step(state: TrainState, batch, key: jax.Array):
    x, y = batch
    if augment == "crop_flip":
      x = crop_flip(key, x)
    (loss, (new_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, x, y)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "accuracy": (logits.argmax(-1) == y).mean()}
    return TrainState(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state), metrics

  return step


def make_predict_fn(model, batch_size: int = 512):
  """``predict(params, batch_stats, data, indices) -> logits [n, C]`` in eval mode.

  Runs in fixed-size chunks (the last one padded) so memory stays bounded
  under a vmap over many seeds.
  """

  def predict(params, batch_stats, data, indices):
    n = indices.shape[0]
    bs = min(batch_size, n)
    chunks = -(-n // bs)
    padded = jnp.concatenate([indices, jnp.broadcast_to(indices[:1], (chunks * bs - n,))])

    def one(idx):
      x, _ = data.gather(idx)
      return apply_eval(model, params, batch_stats, x).astype(jnp.float32)

    logits = jax.lax.map(one, padded.reshape(chunks, bs))
    return logits.reshape(chunks * bs, -1)[:n]

  return predict


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of correct argmax predictions."""
  return (logits.argmax(-1) == labels).mean()
