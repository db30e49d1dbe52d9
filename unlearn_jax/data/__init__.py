"""Datasets, splits and device-resident batching."""

from unlearn_jax.data.dataset import Dataset
from unlearn_jax.data.dataset import SplitData
from unlearn_jax.data.dataset import to_device
from unlearn_jax.data.sources import SOURCES
from unlearn_jax.data.sources import load_dataset
from unlearn_jax.data.splits import FORGET_MODES
from unlearn_jax.data.splits import SplitSpec
from unlearn_jax.data.splits import forget_indices
from unlearn_jax.data.splits import make_splits
