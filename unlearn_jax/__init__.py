"""unlearn_jax: machine-unlearning evaluation with the NeurIPS 2023 competition protocol, in JAX.

Subpackages: ``data``, ``models``, ``training``, ``unlearning``, ``metrics`` (the parts);
``results`` (the results record and its files), ``analysis`` (evaluations of scored
populations), ``protocol`` (the evaluation protocol); modules ``seeds`` (the seed axis),
``plugins`` (a user's own method or model from a file), ``sweep``, ``api`` and ``cli``.

The whole protocol in one call: :func:`unlearn_jax.evaluate` (see :mod:`unlearn_jax.api`).
"""

from unlearn_jax import data
from unlearn_jax import metrics
from unlearn_jax import models
from unlearn_jax import seeds
from unlearn_jax import training
from unlearn_jax import unlearning
from unlearn_jax.api import evaluate

__version__ = "0.1.0"
