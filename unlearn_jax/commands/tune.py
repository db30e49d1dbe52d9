"""``unlearn-jax tune``: measure the seed-axis chunk size for a workload on this device.

``evaluate`` and ``train`` do this by themselves (``--strategy auto`` on a backend
without a measured row, or ``--strategy tune``); this command does it ahead of a long
run, prints every rung and stores the choice where they look it up
(:func:`unlearn_jax.tuning.cache_file`). The workload must match the run's: model,
classes, image shape, recipe (batch size), convolution lowering and compute dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import jax

from unlearn_jax import tuning
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES, MODELS
from unlearn_jax.training import RECIPES


def add_parser(sub) -> None:
  p = sub.add_parser("tune", help="measure the best seed-axis chunk size for a workload on this device",
                     description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--model", default="resnet18", help="model name")
  p.add_argument("--num-classes", type=int, default=10)
  p.add_argument("--image-shape", default="32,32,3", help="H,W,C of one image (digits: 8,8,1)")
  p.add_argument("--recipe", default="competition", help="training recipe (sets optimizer and batch size)")
  p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
  p.add_argument("--conv-impl", default="auto", choices=CONV_IMPL_CHOICES,
                 help="convolution lowering (auto: the backend's measured default, else both are timed)")
  p.add_argument("--dtype", default="float32", choices=sorted(COMPUTE_DTYPES))
  p.add_argument("--max-chunk", type=int, default=512, help="largest chunk to try (e.g. the number of models)")
  p.add_argument("--steps", type=int, default=3, help="training steps per timed call")
  p.add_argument("--retune", action="store_true", help="measure again even if a choice is stored")


def run(args) -> int:
  if args.model not in MODELS:
    raise ValueError(f"unknown model {args.model!r}; expected one of {sorted(MODELS)}")
  if args.recipe not in RECIPES:
    raise ValueError(f"unknown recipe {args.recipe!r}; expected one of {sorted(RECIPES)}")
  try:
    shape = tuple(int(d) for d in args.image_shape.split(","))
  except ValueError:
    raise ValueError(f"--image-shape must be comma-separated integers, got {args.image_shape!r}") from None
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"--image-shape must be three positive integers H,W,C, got {args.image_shape!r}")
  for name in ("num_classes", "max_chunk", "steps"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
  if args.batch_size is not None and args.batch_size < 1:
    raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
  batch = args.batch_size or RECIPES[args.recipe]().batch_size
  workload = tuning.Workload(model=args.model, num_classes=args.num_classes, image_shape=shape,
                             recipe=args.recipe, batch_size=batch, conv_impl=args.conv_impl, dtype=args.dtype)
  path = tuning.cache_file()
  conv_impl, conv_source = tuning.resolve_conv_impl(args.conv_impl, workload, args.max_chunk, path=path,
                                                    retune=args.retune, steps=args.steps)
  workload = dataclasses.replace(workload, conv_impl=conv_impl)
  print(f"conv_impl: {conv_impl} ({conv_source})")
  # Timing the lowerings measured the gemm ladder afresh just now: no need to measure it twice.
  fresh = args.retune and conv_source == "tuned on this device" and conv_impl == "gemm"
  chunk = tuning.tuned_chunk(workload, args.max_chunk, path=path, retune=args.retune and not fresh,
                             steps=args.steps)
  entry = tuning.load_choices(path).get(workload.cache_key(), {})
  print(f"device: {jax.local_devices()[0].device_kind} ({jax.default_backend()}); workload: {workload.cache_key()}")
  print("| chunk | ms per seed-step | models·epochs/s (50,000 examples) | MB/seed | compile s | note |")
  print("|-------|------------------|-----------------------------------|---------|-----------|------|")
  steps_per_epoch = math.ceil(50_000 / batch)
  for t in (tuning.Trial(**row) for row in entry.get("trials", [])):
    rate = f"{1 / (t.seed_step_s * steps_per_epoch):.3g}" if t.ran else "-"
    ms = f"{1e3 * t.seed_step_s:.3f}" if t.ran else "-"
    mb = f"{t.bytes_per_seed / 2**20:.0f}" if math.isfinite(t.bytes_per_seed) else "-"
    cs = f"{t.compile_s:.1f}" if math.isfinite(t.compile_s) else "-"
    mark = " (chosen)" if t.chunk == chunk else ""
    print(f"| {t.chunk}{mark} | {ms} | {rate} | {mb} | {cs} | {t.note} |")
  print(f"chunk size {chunk} stored in {path}")
  return 0
