"""The smallest smoke configuration: the default MLP trained 3 epochs, N = 8.

Command::

  unlearn-jax evaluate --config tiny --method retrain --output-dir runs/tiny

Expected: most of its time is compilation, so it is fastest on a warm cache (the compiled
programs are kept under ``<cache-dir>/jax-compilation``; the first run on a cold cache also
trains the original and retrained models); retain and test accuracies around 95-96%; ``retrain`` scores F near 0.19 and ``none`` 0. With N = 8 the forgetting quality is noisy (buckets reach eps = 2.5 only);
use ``--num-models 32`` or more to compare methods.
"""

from __future__ import annotations

from unlearn_jax.configs import default


def get_config():
  config = default.get_config()
  config.update(
      recipe_overrides={"epochs": 3, "lr": 3e-3},
      hp={},
      method_defaults={**config["method_defaults"], "digits": {"finetune": {"epochs": 1}}},
      num_models=8,
      chunk_size=8,
      plots=False,
  )
  return config
