"""Type aliases shared across the package. Nothing executable lives here."""

from typing import Any, Mapping

import jax

Array = jax.Array
Params = Any  # a pytree of arrays
BatchStats = Any  # a pytree of arrays (BatchNorm running statistics)
OptState = Any  # an optax state pytree
Metrics = Mapping[str, jax.Array]
