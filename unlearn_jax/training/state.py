"""The arrays-only training state."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax

from unlearn_jax.types import BatchStats, OptState, Params


@flax.struct.dataclass
class TrainState:
  """State of one model's training. Arrays only: the apply function and the
  optimiser live in closures of the step that updates this state.

  Attributes:
    step: number of optimiser updates taken (int32 scalar).
    params: model parameters.
    batch_stats: BatchNorm running statistics (``{}`` for models without BN).
    opt_state: optax state.
  """

  step: jax.Array
  params: Params
  batch_stats: BatchStats
  opt_state: OptState

  @classmethod
  def create(cls, params: Params, batch_stats: BatchStats, tx: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
               opt_state=tx.init(params))


def init_variables(model, key: jax.Array, image_shape) -> tuple[Params, BatchStats]:
  """``(params, batch_stats)`` of ``model`` freshly initialised from ``key``."""
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return variables["params"], variables.get("batch_stats", {})
