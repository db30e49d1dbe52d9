"""Model registry: name -> constructor ``fn(num_classes, conv_impl, dtype) -> nn.Module``.

Every model is called as ``model.apply(variables, x, train=bool)``; in train
mode ``mutable=['batch_stats']`` returns the updated BatchNorm statistics.
"""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from unlearn_jax import loading
from unlearn_jax.models.layers import BatchNorm
from unlearn_jax.models.layers import CONV_IMPLS
from unlearn_jax.models.layers import Conv
from unlearn_jax.models.layers import Dense
from unlearn_jax.models.resnet import ResNet18
from unlearn_jax.models.small import MLP
from unlearn_jax.models.small import SmallCNN

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda num_classes, conv_impl="xla", dtype=None: ResNet18(
        num_classes, cifar_stem=False, conv_impl=conv_impl, dtype=dtype),
    "resnet18_cifar": lambda num_classes, conv_impl="xla", dtype=None: ResNet18(
        num_classes, cifar_stem=True, conv_impl=conv_impl, dtype=dtype),
    "cnn": lambda num_classes, conv_impl="xla", dtype=None: SmallCNN(
        num_classes, conv_impl=conv_impl, dtype=dtype),
    "tiny_cnn": lambda num_classes, conv_impl="xla", dtype=None: SmallCNN(
        num_classes, widths=(8,), conv_impl=conv_impl, dtype=dtype),
    "mlp": lambda num_classes, conv_impl="xla", dtype=None: MLP(num_classes, dtype=dtype),
    "tiny_mlp": lambda num_classes, conv_impl="xla", dtype=None: MLP(num_classes, hidden=(16,), dtype=dtype),
}

# What a caller may ask for: a lowering, or "auto" (measured default or timed on the device).
CONV_IMPL_CHOICES = ("auto", *CONV_IMPLS)

# Compute dtypes by name: bfloat16 is mixed precision (float32 parameters, BatchNorm
# statistics and losses; bfloat16 activations and matmuls).
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def get_model(name: str, num_classes: int, conv_impl: str = "xla", dtype=None) -> nn.Module:
  """Builds model ``name`` from the registry, or a user's ``path/to/file.py:make`` / ``module:make``
  (see :func:`build_model`)."""
  if name not in MODELS and not loading.is_spec(name):
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)} or path/to/file.py:factory")
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"unknown conv impl {conv_impl!r}; expected one of {list(CONV_IMPLS)}")
  if name not in MODELS:
    return build_model(name, num_classes, conv_impl, dtype)
  return MODELS[name](num_classes, conv_impl=conv_impl, dtype=dtype)


def build_model(spec: str, num_classes: int, conv_impl: str = "xla", dtype=None) -> nn.Module:
  """The Flax module a ``--model`` plugin spec builds: ``make(num_classes, conv_impl, dtype)``.

  The spec is loaded by :func:`unlearn_jax.loading.load_factory`; a factory that raises
  or returns something other than a ``flax.linen.Module`` is a one-line ``ValueError``.
  """
  plugin = loading.load_factory(spec, "model")
  model = loading.call_factory(plugin.factory, f"model factory {spec!r}", num_classes, conv_impl, dtype)
  if not isinstance(model, nn.Module):
    raise ValueError(f"model factory {spec!r} returned a {type(model).__name__}, not a flax.linen Module")
  return model


# Measured (benchmarks/README.md, "Training throughput"): on CPU the im2col GEMM
# convolution trains ~10x faster than XLA's convolution, alone and under vmap. Only
# measured backends belong here; elsewhere ``conv_impl="auto"`` times both lowerings on
# the device (unlearn_jax/tuning.py). Background for GPUs: a vmap over per-seed
# kernels turns XLA's convolution into a grouped convolution whose backward pass is
# reported slow on CUDA (jax issue #13800), while the GEMM form becomes batched matmuls.
DEFAULT_CONV_IMPL = {"cpu": "gemm"}


def default_conv_impl(backend: Optional[str] = None) -> Optional[str]:
  """The measured convolution lowering for ``backend`` (default: JAX's), or ``None`` if unmeasured."""
  return DEFAULT_CONV_IMPL.get(backend or jax.default_backend())
