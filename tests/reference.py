"""Slow, obviously-correct NumPy references for the metric tests.

The oracle lives in :mod:`unlearn_jax.metrics.reference` so the speed benchmark can
import it too; it is written from the competition metric specification, one example at a
time, every threshold compared with every model.
"""

from unlearn_jax.metrics.reference import reference_confidence as reference_confidence
from unlearn_jax.metrics.reference import reference_epsilons as reference_epsilons
from unlearn_jax.metrics.reference import reference_example as reference_example
from unlearn_jax.metrics.reference import reference_forgetting_quality as reference_forgetting_quality
from unlearn_jax.metrics.reference import reference_points as reference_points
