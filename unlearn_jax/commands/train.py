"""``unlearn-jax train``: train N models as one program and print their accuracies."""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from unlearn_jax import compile_cache, seeds, tuning
from unlearn_jax._validate import check_seed
from unlearn_jax.configs import default as default_config
from unlearn_jax.data import SplitSpec, make_splits
from unlearn_jax.data.synthetic import load_data
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES, get_model
from unlearn_jax.training import RECIPES, accuracy, make_predict_fn, make_train_fn


def dataset_defaults(dataset: str) -> tuple[str, str]:
  """``(model, recipe)`` of ``dataset`` as ``evaluate`` picks them (``configs/default.py``'s ``dataset_defaults``)."""
  defaults = default_config.get_config()["dataset_defaults"].get(dataset, {})
  return defaults.get("model", "resnet18"), defaults.get("recipe", "competition")


def add_parser(sub) -> None:
  p = sub.add_parser("train", help="train N models (original recipe) and print their accuracies",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--dataset", default="digits", help="dataset name (random_cifar10: random CIFAR-shaped data)")
  p.add_argument("--data-dir", default=None, help="directory of the dataset's files (if it needs any)")
  p.add_argument("--download", action="store_true",
                 help="first download and prepare a tensorflow-datasets source into --data-dir "
                      "(needs internet and: pip install 'unlearn_jax[download]')")
  p.add_argument("--model", default=None, help="model name (default: per dataset, as evaluate: configs/default.py's dataset_defaults)")
  p.add_argument("--recipe", default=None, choices=sorted(RECIPES), help="training recipe (default: per dataset, as evaluate)")
  p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
  p.add_argument("--num-models", type=int, default=8, help="how many seeds to train")
  p.add_argument("--split", default="retain", choices=["train", "retain"],
                 help="train on the full training set (original) or on retain (retrained models)")
  p.add_argument("--strategy", default="auto", choices=list(seeds.STRATEGIES), help="seed-parallel strategy")
  p.add_argument("--chunk-size", type=int, default=None, help="seeds per program for chunked/shard")
  p.add_argument("--conv-impl", default="auto", choices=CONV_IMPL_CHOICES,
                 help="convolution lowering (auto: the measured default, else timed on this device)")
  p.add_argument("--seed", type=int, default=0, help="root seed")
  p.add_argument("--dtype", default="float32", choices=sorted(COMPUTE_DTYPES),
                 help="compute dtype; parameters, BatchNorm statistics and the loss stay float32")
  compile_cache.add_flag(p)


def run(args) -> int:
  with compile_cache.for_command(args):
    return _run(args)


def _run(args) -> int:
  if args.num_models < 1:
    raise ValueError(f"--num-models must be >= 1, got {args.num_models}")
  check_seed("--seed", args.seed)
  if args.download:
    from unlearn_jax.data import download
    download.prepare_tfds(download.check_downloadable(args.dataset), args.data_dir, print)
  dataset = load_data(args.dataset, args.data_dir)
  _, data = make_splits(dataset, SplitSpec(seed=args.seed))
  default_model, default_recipe = dataset_defaults(args.dataset)
  model_name = args.model or default_model
  recipe_name = args.recipe or default_recipe
  recipe = RECIPES[recipe_name]()
  if args.epochs is not None:
    recipe = recipe.with_epochs(args.epochs)
  workload = tuning.Workload.of_run(model_name, data, recipe_name, recipe, args.conv_impl, args.dtype)
  conv_impl, conv_source = tuning.resolve_conv_impl(args.conv_impl, workload,
                                                    max_chunk=seeds.seeds_per_device(args.num_models))
  workload = dataclasses.replace(workload, conv_impl=conv_impl)
  model = get_model(model_name, data.num_classes, conv_impl=conv_impl, dtype=COMPUTE_DTYPES[args.dtype])
  runner = tuning.seed_runner(make_train_fn(model, recipe, split=args.split), args.strategy, args.chunk_size,
                              model_name=model_name, workload=workload, num_seeds=args.num_models)
  keys = seeds.seed_keys(jax.random.key(args.seed), args.num_models)
  predict = jax.jit(jax.vmap(make_predict_fn(model), in_axes=(0, 0, None, None)))
  print(f"training {args.num_models} x {model_name} on {args.dataset} ({args.split}: "
        f"{data.split(args.split).shape[0]} examples, {recipe.epochs} epochs) strategy={runner.strategy}"
        f"{f' x{runner.chunk_size}' if runner.strategy in ('chunked', 'shard') and runner.chunk_size else ''} "
        f"({runner.source}) conv_impl={conv_impl} ({conv_source}) dtype={args.dtype}")
  t0 = time.perf_counter()
  done, accs = 0, {"train": [], "test": []}
  for lo, hi, result in runner.iter_chunks(keys, data):
    for split in accs:
      idx = data.split(args.split if split == "train" else "test")
      logits = predict(result.params, result.batch_stats, data, idx)
      accs[split].append(np.asarray(jax.vmap(accuracy, in_axes=(0, None))(logits, data.labels[idx])))
    done = hi
    rate = done / (time.perf_counter() - t0)
    print(f"  models {done}/{args.num_models}  {rate:.2f} models/s", flush=True)
  elapsed = time.perf_counter() - t0
  train_acc, test_acc = np.concatenate(accs["train"]), np.concatenate(accs["test"])
  print(f"{args.split} accuracy: mean {100 * train_acc.mean():.2f}%  (min {100 * train_acc.min():.2f}, "
        f"max {100 * train_acc.max():.2f})")
  print(f"test accuracy:  mean {100 * test_acc.mean():.2f}%  (min {100 * test_acc.min():.2f}, "
        f"max {100 * test_acc.max():.2f})")
  print(f"{args.num_models} models in {elapsed:.1f} s ({args.num_models / elapsed:.2f} models/s, incl. compile)")
  return 0
