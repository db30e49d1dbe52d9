"""``neggrad``: gradient ascent on the forget set ("GA"), ``docs/algorithms.md`` §6.2.

Minimises −CE(f_θ(x_f), y_f) over D_f only, with torch SGD lr 1e-4, momentum
0.9, coupled weight decay 5e-4, 5 epochs, bs 256, student in train mode. It
collapses easily and is a weak baseline.

Source: Jia et al., "Model Sparsity Can Simplify Machine Unlearning",
arXiv 2304.04934, repository ``OPTML-Group/Unlearn-Sparse`` (``unlearn/GA.py``);
the name is from Golatkar et al., arXiv 1911.04933.
"""

from __future__ import annotations

from unlearn_jax import _validate
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, SetSizes, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

SMALL_OVERRIDES = dict(epochs=1, batch_size=8)

HPARAMS = (
    HParam("lr", "float", 1e-4, low=0, traceable=True, doc="SGD learning rate"),
    HParam("epochs", "int", 5, low=1, doc="passes over D_f"),
    HParam("batch_size", "int", 256, low=1, doc="forget batch size"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
    HParam("weight_decay", "float", 5e-4, low=0, doc="coupled L2 decay"),
    HParam("bn_train", "bool", True, doc="student BatchNorm in train mode"),
)


def make(model, lr: float = 1e-4, epochs: int = 5, batch_size: int = 256, momentum: float = 0.9,
         weight_decay: float = 5e-4, bn_train: bool = True) -> UnlearningMethod:
  """Gradient ascent on D_f.

  Args:
    lr, momentum, weight_decay: torch SGD settings (coupled decay).
    epochs: passes over D_f (each shuffled, remainder batch kept).
    batch_size: forget batch size.
    bn_train: student BatchNorm in train mode (the reference) or eval mode.
  """
  _validate.check_positive_int("epochs", epochs)
  _validate.check_positive_int("batch_size", batch_size)

  loss_fn = toolkit.negated(toolkit.ce_loss(model, bn_train=bn_train))

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    tx = torch_optimizer("sgd", lr, momentum, weight_decay)
    step = toolkit.make_step(loss_fn, tx)
    state, epoch_losses = toolkit.run_epochs(step, toolkit.start(original, tx), data, data.forget,
                                             batch_size, epochs, key)
    return UnlearnResult(toolkit.finish(state), {"loss": epoch_losses})

  def cost(sizes: SetSizes) -> float:
    return epochs * sizes.forget / sizes.retain

  return UnlearningMethod("neggrad", unlearn, cost,
                          "Jia et al. arXiv 2304.04934, OPTML-Group/Unlearn-Sparse unlearn/GA.py",
                          dict(lr=lr, epochs=epochs, batch_size=batch_size, momentum=momentum,
                               weight_decay=weight_decay, bn_train=bn_train))
