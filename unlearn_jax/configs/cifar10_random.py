"""Full-size accelerator mode: ResNet-18 on CIFAR-10-shaped data, N = 512.

Command (on a GPU; random images of CIFAR-10's shape, 50k train / 10k test, because the
real data cannot be downloaded here — use ``--set dataset=cifar10 --data-dir DIR`` with
the real files)::

  unlearn-jax evaluate --config cifar10_random --method finetune --output-dir runs/cifar_random

The seed axis is left to ``strategy=auto``: on a backend without a measured row it
times chunk sizes of this very workload on the device first (about a minute per rung,
once per machine; the choice is stored, see :mod:`unlearn_jax.tuning`; ``unlearn-jax
tune --model resnet18 --recipe starting_kit`` measures it ahead of time). The
convolution lowering is left to ``conv_impl=auto`` likewise (``gemm`` and XLA's own
convolution timed on the device); add ``--dtype bfloat16`` for mixed precision.

Expected: a throughput and memory check only. Labels are random, so accuracies sit near
10% on test and the forgetting quality says nothing about the method. Retrained
parameters are not cached (512 ResNet-18s are ~22 GB); their outputs are.
"""

from __future__ import annotations

from unlearn_jax.configs import default


def get_config():
  config = default.get_config()
  config.update(dataset="random_cifar10", model="resnet18", recipe="starting_kit",
                cache_params=False)
  return config
