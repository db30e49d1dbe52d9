"""The default evaluation: the full competition protocol on the embedded digits data.

Command (7 min 40 s wall on a shared 2-core CPU from a cold cache, load average ~15; later
methods reuse the original and retrained models and cost only their own stage + the metric)::

  unlearn-jax evaluate --dataset digits --method finetune --num-models 512 --output-dir runs/finetune

Expected result (N = 512, MLP, ``digits`` recipe with the organizers' rules: class weights
from the training split, original = best validation over all epochs (epoch 4 of 20 here:
the 180-example validation accuracy plateaus and ties never replace), retrained = last
epoch; measured): the original has 96.7% retain / 96.6% test accuracy, the retrained
models 99.0% / 97.6%; ``finetune`` (starting-kit preset, SGD 0.1 / 0.9 / 5e-4, 5 epochs,
cost 0.25 x retraining) reaches 98.6% / 97.2% and scores forgetting quality F = 0.0016
(median per-example epsilon 5.1), final score 0.0016. ``retrain`` as the method scores
F = 0.124 at N = 128 (the perfect-unlearner level), ``none`` scores F = 0 and is flagged
as a no-op.

Finetune's learning rate on digits: the kit's 0.1 was checked on the MLP and is not too
high: it does not diverge and keeps accuracy (retain 99.0%, test 97.3% at N = 16), and
lr 0.01 / 0.03 gave the same accuracy with F no better (0.038 / 0.031 vs 0.040 at N = 16).
So the kit preset is kept on digits. On the competition's data ``finetune`` defaults to
the organizers' own baseline, ``do_unlearning`` of ``google-deepmind/unlearning_evaluation``
(preset ``kaggle``: SGD 1e-3 / momentum 0.9 / coupled wd 5e-4, one epoch at a constant rate,
bs 64, unweighted CE, BatchNorm in train mode). ``unlearn-jax methods --dataset D`` lists
the defaults of dataset D; ``--hp`` overrides them.

Keys:
  dataset, data_dir: data source and its directory.
  model, recipe: ``None`` picks the dataset's default from ``dataset_defaults``.
  original: a given original model (a torchvision ResNet-18 ``state_dict`` ``.pth``, or an
    ``original.npz`` this project saved) used instead of training one (``None``: train it).
  recipe_overrides: fields of :class:`unlearn_jax.training.Recipe` to replace (e.g. epochs).
  forget_mode, forget_fraction, forget_groups, forget_classes, split_seed: the
    :class:`unlearn_jax.data.SplitSpec`. ``forget_mode`` ``None`` takes the dataset's default
    from ``dataset_defaults`` (``source`` on ``competition``: the data's own ``forget.csv``,
    whole people, as the organizers forget; ``random`` elsewhere). On the Kaggle layout
    ``split_seed`` also draws the person-disjoint validation/test halves of ``validation.csv``.
  method, hp: the unlearning method and its hyperparameter overrides.
  method_defaults: per dataset, per method hyperparameters applied before ``hp`` (recorded in
    results.json as ``method_defaults`` and printed when a run uses them).
  num_models: N, retrained and unlearned models each.
  seed: root seed of all model keys.
  strategy, chunk_size: seed-axis strategy (``auto`` takes the measured table's choice,
    or measures the chunk size on this device where the table has no row, and shards
    over local devices when there are several; ``tune`` always measures) and seeds per
    program.
  conv_impl: ``auto`` (the backend's measured default, ``gemm`` on CPU; on a backend
    without one both lowerings are timed on the device), ``gemm`` or ``xla``.
  dtype: compute dtype, ``float32`` or ``bfloat16`` (mixed precision).
  cache_dir: where original/retrained models and outputs are cached.
  output_dir: where results.json, the plots and the resumable unlearning chunks go.
  cache_params: also cache retrained parameters (turn off for ResNet-18 at N = 512: ~22 GB).
  compile_cache: keep JAX's persistent compilation cache in ``cache_dir/jax-compilation``.
  allow_nan_drop: drop diverged seeds instead of failing.
  plots: write PNG plots.
  metrics: evaluations, comma-separated: competition (always), ulira, klom.
  margin_examples: retain and held-out examples on which klom records margins.
  bootstrap: draws of the bootstrap intervals (0: none).
  with_ceiling: compute F of retrain as the method when the cache lacks it.
  max_hours: time budget in hours (``None``: none). After each stage's first chunk (and a
    sweep's first point) the run's estimated total is printed; a run estimated past the
    budget stops with a one-line error, its finished chunks kept (:mod:`unlearn_jax.protocol.budget`).
  grid, confirm: ``unlearn-jax sweep`` only: hyperparameter name -> list of values (the
    sweep's grid; ``evaluate`` refuses a config with one) and whether to re-evaluate the
    best point on a fresh unlearning seed stream.
"""

from __future__ import annotations

from typing import Any


def get_config() -> dict[str, Any]:
  return {
      "dataset": "digits",
      "data_dir": None,
      "model": None,
      "recipe": None,
      "recipe_overrides": {},
      "original": None,
      "forget_mode": None,
      "forget_fraction": 0.1,
      "forget_groups": 15,
      "forget_classes": None,
      "split_seed": 0,
      "method": "finetune",
      "hp": {},
      "method_defaults": {
          "competition": {"finetune": {"preset": "kaggle"}},
      },
      "num_models": 512,
      "seed": 0,
      "strategy": "auto",
      "chunk_size": None,
      "conv_impl": "auto",
      "dtype": "float32",
      "cache_dir": "unlearn_cache",
      "output_dir": "results",
      "cache_params": True,
      "compile_cache": True,
      "allow_nan_drop": False,
      "plots": True,
      "metrics": "competition",
      "margin_examples": 1000,
      "bootstrap": 0,
      "with_ceiling": False,
      "max_hours": None,
      "grid": {},
      "confirm": False,
      "dataset_defaults": {
          "digits": {"model": "mlp", "recipe": "digits"},
          "random_cifar10": {"model": "resnet18", "recipe": "starting_kit"},
          "cifar10": {"model": "resnet18", "recipe": "starting_kit"},
          "cifar10_tarball": {"model": "resnet18", "recipe": "starting_kit"},
          "competition": {"model": "resnet18", "recipe": "competition", "forget_mode": "source"},
      },
  }
