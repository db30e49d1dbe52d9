"""Interoperability with other frameworks' checkpoints (optional dependencies)."""

from unlearn_jax.interop.torch_import import import_torchvision_resnet18
from unlearn_jax.interop.torch_import import load_torch_state_dict
