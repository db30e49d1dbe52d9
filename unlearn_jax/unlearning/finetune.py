"""``finetune``: keep training on the retain set so forget-specific fit decays.

Presets (``docs/algorithms.md`` §6.1):

* ``kit`` (default): SGD 0.1 / momentum 0.9 / wd 5e-4, per-epoch cosine, 5 epochs, bs 128;
* ``kaggle``: the organizers' baseline (``do_unlearning`` in ``google-deepmind/unlearning_evaluation``
  ``main.py``, also the Kaggle starter): SGD 1e-3 / 0.9 / coupled wd 5e-4, 1 epoch at a constant
  rate (cosine with T_max 1), bs 64, unweighted CE, BatchNorm in train mode. The default on the
  ``competition`` dataset (``configs/default.py`` ``method_defaults``);
* ``scrub-repo``: SCRUB repository's fine-tuning baseline, plain SGD 0.01 (no momentum, wd 0)
  plus (λ/2)‖θ − θ₀‖² with λ 0.1 (the small-scale training decay; 5e-4 at large scale),
  10 epochs, bs 128, BatchNorm in eval mode;
* ``scrub-MIA``: the MIA notebook's fine-tuning (the repository's ``loops.train_vanilla``):
  plain SGD lr 0.04 (no momentum, wd 0), plain CE with no L2-to-initial term, 10 epochs,
  bs 32, BatchNorm in train mode;
* ``sparse``: Unlearn-Sparse's FT, SGD 0.01 / 0.9 / 5e-4, 10 epochs, bs 256 (its multistep
  milestones 91/136 never fire within 10 epochs, so the rate is constant).

Sources: the CIFAR-10 starting kit notebook; the official Kaggle starter
"run-unlearn-finetune"; ``meghdadk/SCRUB`` (``small_scale_unlearning.ipynb``,
``MIA_experiments.ipynb``); ``OPTML-Group/Unlearn-Sparse`` (``unlearn/FT.py``).
"""

from __future__ import annotations

from typing import Optional

from unlearn_jax.training.recipes import steps_per_epoch, torch_optimizer
from unlearn_jax.unlearning import toolkit
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod, UnlearnResult
from unlearn_jax.unlearning.hparams import HParam

PRESETS = {
    "kit": dict(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=5, batch_size=128, schedule="cosine_epoch"),
    "kaggle": dict(lr=1e-3, momentum=0.9, weight_decay=5e-4, epochs=1, batch_size=64, schedule="constant"),
    "scrub-repo": dict(lr=0.01, momentum=0.0, weight_decay=0.0, epochs=10, batch_size=128, schedule="constant",
                       l2_init=0.1, bn_train=False),
    "scrub-MIA": dict(lr=0.04, momentum=0.0, weight_decay=0.0, epochs=10, batch_size=32, schedule="constant",
                      l2_init=0.0, bn_train=True),
    "sparse": dict(lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=10, batch_size=256, schedule="constant"),
}
PRESET_DEFAULTS = dict(l2_init=0.0, bn_train=True)
SMALL_OVERRIDES = dict(epochs=1, batch_size=16)

HPARAMS = (
    HParam("preset", "str", "kit", choices=tuple(PRESETS), doc="reference setting the other fields default to"),
    HParam("lr", "float", None, low=0, optional=True, traceable=True,
           doc="SGD learning rate (None: the preset's value)"),
    HParam("epochs", "int", None, low=1, optional=True, doc="passes over D_r (None: the preset's value)"),
    HParam("batch_size", "int", None, low=1, optional=True, doc="retain batch size (None: the preset's value)"),
    HParam("momentum", "float", None, low=0, high=1, optional=True, doc="SGD momentum (None: the preset's value)"),
    HParam("weight_decay", "float", None, low=0, optional=True, doc="coupled L2 decay (None: the preset's value)"),
    HParam("schedule", "str", None, choices=("constant", "cosine_epoch"), optional=True,
           doc="learning-rate schedule (None: the preset's value)"),
    HParam("l2_init", "float", None, low=0, optional=True, doc="λ of (λ/2)‖θ − θ₀‖² (None: the preset's value)"),
    HParam("bn_train", "bool", None, optional=True, doc="student BatchNorm in train mode (None: the preset's value)"),
)


def make(model, preset: str = "kit", lr: Optional[float] = None, epochs: Optional[int] = None,
         batch_size: Optional[int] = None, momentum: Optional[float] = None,
         weight_decay: Optional[float] = None, schedule: Optional[str] = None,
         l2_init: Optional[float] = None, bn_train: Optional[bool] = None) -> UnlearningMethod:
  """Fine-tuning on D_r with cross-entropy; ``None`` fields take the preset's value.

  ``l2_init`` is λ of a (λ/2)‖θ − θ₀‖² penalty; ``bn_train=False`` runs the student's BatchNorm in eval mode.
  """
  hp = toolkit.resolve_preset("finetune preset", PRESETS, preset,
                              dict(lr=lr, epochs=epochs, batch_size=batch_size, momentum=momentum,
                                   weight_decay=weight_decay, schedule=schedule, l2_init=l2_init,
                                   bn_train=bn_train), defaults=PRESET_DEFAULTS)
  if hp["schedule"] not in ("constant", "cosine_epoch"):
    raise ValueError(f"finetune schedule must be 'constant' or 'cosine_epoch', got {hp['schedule']!r}")

  def unlearn(original: ModelState, data, key) -> UnlearnResult:
    n_steps = steps_per_epoch(data.retain.shape[0], hp["batch_size"])
    if hp["schedule"] == "cosine_epoch":
      lr = toolkit.epoch_cosine_schedule(hp["lr"], hp["epochs"], n_steps)
    else:
      lr = hp["lr"]
    tx = torch_optimizer("sgd", lr, hp["momentum"], hp["weight_decay"])
    ce = toolkit.ce_loss(model, bn_train=hp["bn_train"])
    if hp["l2_init"]:
      def loss_fn(params, batch_stats, batch, k):
        loss, aux = ce(params, batch_stats, batch, k)
        return loss + 0.5 * hp["l2_init"] * toolkit.l2_to(params, original.params), aux
    else:
      loss_fn = ce
    step = toolkit.make_step(loss_fn, tx)
    state, losses = toolkit.run_epochs(step, toolkit.start(original, tx), data, data.retain,
                                       hp["batch_size"], hp["epochs"], key)
    return UnlearnResult(toolkit.finish(state), {"loss": losses})

  return UnlearningMethod("finetune", unlearn, lambda sizes: float(hp["epochs"]),
                          "starting kit notebook; Kaggle starter run-unlearn-finetune; meghdadk/SCRUB; "
                          "OPTML-Group/Unlearn-Sparse",
                          dict(preset=preset, **hp))
