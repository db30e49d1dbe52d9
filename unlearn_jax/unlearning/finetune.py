"""``finetune``: keep training on the retain set so forget-specific fit decays.

Presets (algorithms spec §6.1):

* ``kit`` (default): SGD 0.1 / momentum 0.9 / wd 5e-4, per-epoch cosine, 5 epochs, bs 128;
* ``kaggle``: the competition starter, SGD 1e-3 / 0.9 / 5e-4, 1 epoch, bs 64, constant rate.

Sources: the CIFAR-10 starting kit notebook; the official Kaggle starter
"run-unlearn-finetune".
"""

from __future__ import annotations

from typing import Optional

import jax

from unlearn_jax.training.recipes import per_epoch_cosine, steps_per_epoch, torch_optimizer
from unlearn_jax.unlearning import _common
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult

PRESETS = {
    "kit": dict(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=5, batch_size=128, schedule="cosine_epoch"),
    "kaggle": dict(lr=1e-3, momentum=0.9, weight_decay=5e-4, epochs=1, batch_size=64, schedule="constant"),
}


def make(model, preset: str = "kit", lr: Optional[float] = None, epochs: Optional[int] = None,
         batch_size: Optional[int] = None, momentum: Optional[float] = None,
         weight_decay: Optional[float] = None, schedule: Optional[str] = None) -> UnlearningMethod:
  """Fine-tuning on D_r with cross-entropy; ``None`` fields take the preset's value."""
  if preset not in PRESETS:
    raise ValueError(f"unknown finetune preset {preset!r}; expected one of {sorted(PRESETS)}")
  hp = dict(PRESETS[preset])
  for name, value in dict(lr=lr, epochs=epochs, batch_size=batch_size, momentum=momentum,
                          weight_decay=weight_decay, schedule=schedule).items():
    if value is not None:
      hp[name] = value
  if hp["schedule"] not in ("constant", "cosine_epoch"):
    raise ValueError(f"finetune schedule must be 'constant' or 'cosine_epoch', got {hp['schedule']!r}")

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    n_steps = steps_per_epoch(data.retain.shape[0], hp["batch_size"])
    if hp["schedule"] == "cosine_epoch":
      epoch_lr = per_epoch_cosine(hp["lr"], hp["epochs"])
      lr = lambda count: epoch_lr(count // n_steps)
    else:
      lr = hp["lr"]
    tx = torch_optimizer("sgd", lr, hp["momentum"], hp["weight_decay"])
    step = _common.make_step(_common.ce_loss(model), tx)
    state, losses = _common.run_epochs(step, _common.start(original, tx), data, data.retain,
                                       hp["batch_size"], hp["epochs"], key)
    return UnlearnResult(_common.finish(state), {"loss": losses})

  return UnlearningMethod("finetune", unlearn, lambda sizes: float(hp["epochs"]),
                          "starting kit notebook; Kaggle starter run-unlearn-finetune",
                          dict(preset=preset, **hp))
