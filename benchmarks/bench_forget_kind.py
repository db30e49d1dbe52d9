"""How much the kind of forget set moves F on the competition's data layout.

Writes a synthetic Kaggle folder (``retain.csv``, ``forget.csv``, ``validation.csv``,
``images/<person>/<n>.png``) in which every person has one age group, an identity
(a fixed random texture and colour, which a model can memorise) and images that
carry a weak class signal (a class colour) plus noise. Then it runs
``unlearn-jax evaluate --dataset competition`` twice per method at the same N:

* ``--forget-mode source``: the folder's ``forget.csv``, whole people (the default);
* ``--forget-mode random --forget-fraction f``: the same number of images drawn at
  random from the training pool, so the forget people also appear in retain.

and prints one row per (method, forget kind): F, final score, accuracies and how many
forget people are also in retain. Command (from the repository root)::

  PYTHONPATH=$PWD python benchmarks/bench_forget_kind.py --out /tmp/forget_kind --num-models 16
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import time

import numpy as np

METHODS = ("finetune", "neggrad_plus", "kookmin")


def write_folder(root: str, retain_people: int = 40, forget_people: int = 6, validation_people: int = 12,
                 images_per_person: int = 10, side: int = 16, seed: int = 0) -> dict[str, int]:
  from PIL import Image
  rng = np.random.default_rng(seed)
  class_colour = rng.normal(0, 1, (10, 3))
  counts, person = {}, 0
  for name, n_people in (("retain.csv", retain_people), ("forget.csv", forget_people),
                         ("validation.csv", validation_people)):
    rows = []
    for _ in range(n_people):
      label = int(rng.integers(0, 10))
      texture = rng.normal(0, 1, (side, side, 3))
      tint = rng.normal(0, 1, 3)
      os.makedirs(os.path.join(root, "images", str(person)), exist_ok=True)
      for n in range(images_per_person):
        img = 128 + 30 * texture + 20 * tint + 18 * class_colour[label] + rng.normal(0, 25, (side, side, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            os.path.join(root, "images", str(person), f"{n}.png"))
        rows.append((f"{person}_{n}", person, 20 + label, label))
      person += 1
    with open(os.path.join(root, name), "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["image_id", "person_id", "age", "age_group"])
      w.writerows(rows)
    counts[name] = len(rows)
  return counts


def evaluate(args: list[str]) -> dict:
  from unlearn_jax import cli
  err, out = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    rc = cli.main(["evaluate", *args])
  if rc != 0:
    raise SystemExit(err.getvalue())
  i = args.index("--output-dir")
  with open(os.path.join(args[i + 1], "results.json")) as f:
    return json.load(f)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--num-models", type=int, default=16)
  p.add_argument("--epochs", type=int, default=12)
  p.add_argument("--methods", default=",".join(METHODS))
  a = p.parse_args()
  data = os.path.join(a.out, "data")
  if not os.path.exists(os.path.join(data, "validation.csv")):
    os.makedirs(data, exist_ok=True)
    counts = write_folder(data)
  else:
    counts = {name: sum(1 for _ in open(os.path.join(data, name))) - 1
              for name in ("retain.csv", "forget.csv", "validation.csv")}
  fraction = counts["forget.csv"] / (counts["retain.csv"] + counts["forget.csv"])
  common = ["--dataset", "competition", "--data-dir", data, "--model", "cnn", "--recipe", "digits",
            "--epochs", str(a.epochs), "--num-models", str(a.num_models), "--cache-dir",
            os.path.join(a.out, "cache"), "--no-plots", "--quiet"]
  kinds = {"whole people (source)": [], "random images": ["--forget-mode", "random", "--forget-fraction",
                                                          f"{fraction:.6f}"]}
  print(f"# {counts}; random fraction {fraction:.4f}; N={a.num_models}; cnn, digits recipe, {a.epochs} epochs")
  print("| method | forget set | F | final score | forget acc (unl / retr) | test acc (unl / retr) | "
        "forget people also in retain | wall s |")
  print("|---|---|---|---|---|---|---|---|")
  for method in a.methods.split(","):
    for kind, flags in kinds.items():
      t0 = time.perf_counter()
      out = os.path.join(a.out, "runs", f"{method}-{kind.split()[0]}")
      r = evaluate(common + flags + ["--method", method, "--output-dir", out])
      u, rt, people = r["unlearned"], r["retrained"], r["split_people"]
      print(f"| {method} | {kind} | {r['forgetting_quality']:.4f} | {r['final_score']:.4f} | "
            f"{100 * u['forget_accuracy']['mean']:.1f} / {100 * rt['forget_accuracy']['mean']:.1f} | "
            f"{100 * u['test_accuracy']['mean']:.1f} / {100 * rt['test_accuracy']['mean']:.1f} | "
            f"{people['forget_people_in_retain']} of {people['forget_people']} | {time.perf_counter() - t0:.0f} |",
            flush=True)


if __name__ == "__main__":
  main()
