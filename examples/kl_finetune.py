"""``kl_finetune``: fine-tune on the retain set while staying close to the original model.

A complete unlearning method written outside the package, to evaluate with::

  unlearn-jax evaluate --method examples/kl_finetune.py:make --num-models 32 --hp kl_weight=0.5

The contract (the same as every built-in method, see ``unlearn_jax/unlearning/base.py``):
``make(model, **hyperparameters)`` returns an ``UnlearningMethod`` whose
``unlearn(original, data, key)`` performs *one* unlearning run of *one* seed as a pure
JAX function: every random choice comes from ``key`` (the protocol vmaps it over the
N seeds), ``original`` holds the trained model's params and BatchNorm statistics, and
``data`` is the device-resident split (``data.retain``, ``data.forget``,
``data.validation`` are index arrays; ``data.gather(idx)`` returns a batch ``(x, y)``).
``HPARAMS`` declares the hyperparameters (types, defaults, ranges) so that bad values
are refused before anything is trained and ``unlearn-jax methods
examples/kl_finetune.py:make`` lists them; it must match ``make``'s signature.
The step and the epochs come from :mod:`unlearn_jax.unlearning.toolkit`, the helpers
the built-in methods are written with.

The update, per retain batch: ``CE(f_θ(x), y) + kl_weight · KL(p_θ₀^T(x) ‖ p_θ^T(x))``,
i.e. fine-tuning that keeps the original's soft predictions on retain data while the
fit to the forget set decays. Cost: ``epochs`` retain passes plus a teacher forward
(⅓ of a pass) per batch.
"""

from __future__ import annotations

import jax

from unlearn_jax.training import apply_eval, cross_entropy, kl_divergence, torch_optimizer
from unlearn_jax.unlearning import ModelState, UnlearningMethod, UnlearnResult, toolkit
from unlearn_jax.unlearning.toolkit import HParam

HPARAMS = (
    HParam("lr", "float", 0.01, low=0, traceable=True, doc="SGD learning rate"),
    HParam("kl_weight", "float", 1.0, low=0, traceable=True, doc="weight of the KL-to-original term"),
    HParam("temperature", "float", 2.0, low=0, low_open=True, traceable=True, doc="softmax temperature of the KL"),
    HParam("epochs", "int", 2, low=1, doc="passes over the retain set"),
    HParam("batch_size", "int", 64, low=1, doc="retain batch size"),
    HParam("momentum", "float", 0.9, low=0, high=1, doc="SGD momentum"),
)


def make(model, lr: float = 0.01, kl_weight: float = 1.0, temperature: float = 2.0, epochs: int = 2,
         batch_size: int = 64, momentum: float = 0.9) -> UnlearningMethod:
  """Retain-set fine-tuning with a KL term to the original model's predictions."""
  tx = torch_optimizer("sgd", lr, momentum)

  def unlearn(original: ModelState, data, key) -> UnlearnResult:

    def loss_fn(params, batch_stats, batch, step_key):
      del step_key  # no per-step randomness
      x, y = batch
      teacher = jax.lax.stop_gradient(apply_eval(model, original.params, original.batch_stats, x))
      logits, new_stats = toolkit.forward(model, params, batch_stats, x, bn_train=True)
      loss = cross_entropy(logits, y) + kl_weight * kl_divergence(teacher, logits, temperature)
      return loss, (new_stats, {})

    # each epoch e visits D_r in the order permutation(fold_in(fold_in(key, e), 0))
    state, losses = toolkit.run_epochs(toolkit.make_step(loss_fn, tx), toolkit.start(original, tx), data,
                                       data.retain, batch_size, epochs, key)
    return UnlearnResult(toolkit.finish(state), {"loss": losses})

  return UnlearningMethod(
      name="kl_finetune", unlearn=unlearn, cost_fn=lambda sizes: epochs * (1.0 + 1.0 / 3.0),
      source="examples/kl_finetune.py (retain fine-tuning with a KL term to the original)",
      hyperparameters=dict(lr=lr, kl_weight=kl_weight, temperature=temperature, epochs=epochs,
                           batch_size=batch_size, momentum=momentum))
