"""Wall time of the whole evaluation protocol from a cold cache, stage by stage.

Default: the default command (digits, MLP, finetune, N = 512), i.e. what
``unlearn-jax evaluate`` runs with no flags, in a fresh temporary cache. ``--quick``
uses N = 64. Full-size accelerator mode: ``--dataset random_cifar10 --model resnet18``
(random images of CIFAR-10's shape; use ``--dataset cifar10 --data-dir DIR`` when the
real data is available). A second timing reuses the cache for another method, which is
what every later method costs.

Usage::

  python benchmarks/bench_protocol.py --quick
  python benchmarks/bench_protocol.py                     # N = 512, the performance bar (< 5 min on 2 CPU cores)
  python benchmarks/bench_protocol.py --dataset random_cifar10 --model resnet18 --recipe starting_kit \\
      --num-models 512 --no-cache-params --dtype bfloat16  # on a GPU (chunk size measured first)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _timing  # noqa: E402
from unlearn_jax.protocol import config as protocol_config  # noqa: E402
from unlearn_jax.protocol import run as protocol_run  # noqa: E402
from unlearn_jax.results.progress import Progress  # noqa: E402
from unlearn_jax import configs  # noqa: E402
from unlearn_jax.models import COMPUTE_DTYPES, CONV_IMPL_CHOICES  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true", help="N = 64 instead of 512")
  p.add_argument("--dataset", default="digits")
  p.add_argument("--model", default=None)
  p.add_argument("--recipe", default=None)
  p.add_argument("--method", default="finetune")
  p.add_argument("--second-method", default="none", help="timed afterwards on the warm cache ('' to skip)")
  p.add_argument("--num-models", type=int, default=None)
  p.add_argument("--chunk-size", type=int, default=None)
  p.add_argument("--epochs", type=int, default=None)
  p.add_argument("--dtype", default=None, choices=sorted(COMPUTE_DTYPES), help="compute dtype (default float32)")
  p.add_argument("--strategy", default=None, help="seed-axis strategy (default auto)")
  p.add_argument("--conv-impl", default=None, choices=CONV_IMPL_CHOICES, help="default auto")
  p.add_argument("--no-cache-params", action="store_true")
  p.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.jsonl")
  args = p.parse_args()

  cfg = configs.load_config(None)
  cfg.update(dataset=args.dataset, method=args.method, plots=False)
  cfg["num_models"] = args.num_models or (64 if args.quick else 512)
  for key in ("model", "recipe", "chunk_size", "dtype", "strategy", "conv_impl"):
    if getattr(args, key) is not None:
      cfg[key] = getattr(args, key)
  if args.epochs is not None:
    cfg["recipe_overrides"] = {"epochs": args.epochs}
  cfg["cache_params"] = not args.no_cache_params
  load_before = os.getloadavg()[0]
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    cfg.update(cache_dir=os.path.join(tmp, "cache"))
    for label, method in (("cold cache", args.method), ("warm cache", args.second_method)):
      if not method:
        continue
      cfg.update(method=method, output_dir=os.path.join(tmp, method))
      config = protocol_config.from_dict(cfg)
      t0 = time.perf_counter()
      res = protocol_run.evaluate(config, Progress()).record
      total = time.perf_counter() - t0
      w = res["wall_s"]
      rows.append([label, method, config.num_models, f"{total:.1f}", f"{w['original']:.1f}", f"{w['retrained']:.1f}",
                   f"{w['unlearn']:.1f}", f"{w['metric']:.1f}", f"{res['forgetting_quality']:.4f}",
                   f"{res['final_score']:.4f}"])
      if not args.no_record:
        _timing.record("protocol", dict(dataset=config.dataset, model=config.model, recipe=config.recipe,
                                        method=method, num_models=config.num_models, strategy=res["strategy"],
                                        conv_impl=res["conv_impl"], dtype=config.dtype, cache=label),
                       dict(process_total_s=total, **{f"{k}_s": v for k, v in w.items()},
                            forgetting_quality=res["forgetting_quality"], final_score=res["final_score"],
                            load_average_before=load_before, load_average_after=os.getloadavg()[0]))
  print(f"device: {_timing.device_description()}; load average before {load_before:.1f}, "
        f"after {os.getloadavg()[0]:.1f} (on a shared machine, values above the core count mean contention)")
  _timing.print_table(["run", "method", "N", "total s", "original s", "retrained s", "unlearn s", "metric s", "F",
                       "final"], rows)


if __name__ == "__main__":
  main()
