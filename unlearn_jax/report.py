"""Host-side reports: ``results.json``, the leaderboard table and the plots.

Everything here is NumPy / JSON / matplotlib (Agg backend) on numbers that
:func:`unlearn_jax.pipeline.evaluate` already computed; nothing is jitted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from unlearn_jax import checkpoint

RESULTS_FILE = "results.json"
LEADERBOARD_COLUMNS = ("rank", "method", "dataset", "N", "final_score", "forgetting_quality", "F_95ci", "F_over_ceiling",
                       "retain_acc_U",
                       "test_acc_U", "forget_acc_U", "retain_acc_R", "test_acc_R", "mia_U", "cost_rel", "dir")


def write_results(results: Mapping[str, Any], output_dir: str) -> str:
  """Writes ``results`` (minus the host arrays under ``"_arrays"``) atomically; returns the path."""
  clean = {k: v for k, v in results.items() if k != "_arrays"}
  path = os.path.join(output_dir, RESULTS_FILE)
  checkpoint.atomic_write_text(path, json.dumps(clean, indent=1, allow_nan=True) + "\n")
  return path


def read_results(path: str) -> dict[str, Any]:
  """Reads ``results.json`` from a file or a run directory; raises ``ValueError`` on bad input."""
  if os.path.isdir(path):
    path = os.path.join(path, RESULTS_FILE)
  if not os.path.exists(path):
    raise ValueError(f"no results file at {path!r}; run 'unlearn-jax evaluate' first")
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as err:
    raise ValueError(f"cannot read results file {path!r}: {err}") from None
  for field in ("method", "final_score", "forgetting_quality"):
    if field not in data:
      raise ValueError(f"results file {path!r} lacks field {field!r}")
  return data


def leaderboard_rows(paths: Sequence[str]) -> list[dict[str, Any]]:
  """One row per results file, ranked by final score (best first)."""
  rows = []
  for p in paths:
    r = read_results(p)
    u, rt = r.get("unlearned", {}), r.get("retrained", {})
    mean = lambda d, k: d.get(k, {}).get("mean", float("nan"))
    rows.append({
        "method": r["method"], "dataset": r.get("dataset", "?"), "N": r.get("num_models_scored", r.get("num_models")),
        "final_score": float(r["final_score"]), "forgetting_quality": float(r["forgetting_quality"]),
        **_uncertainty_cells(r),
        "retain_acc_U": mean(u, "retain_accuracy"), "test_acc_U": mean(u, "test_accuracy"),
        "forget_acc_U": mean(u, "forget_accuracy"), "retain_acc_R": mean(rt, "retain_accuracy"),
        "test_acc_R": mean(rt, "test_accuracy"), "mia_U": r.get("mia", {}).get("unlearned", float("nan")),
        "cost_rel": r.get("cost", {}).get("relative_to_retrain", float("nan")),
        "dir": os.path.dirname(p) if p.endswith(RESULTS_FILE) else p,
    })
  rows.sort(key=lambda row: -row["final_score"] if math.isfinite(row["final_score"]) else math.inf)
  for i, row in enumerate(rows):
    row["rank"] = i + 1
  return rows


def _uncertainty_cells(results: Mapping[str, Any]) -> dict[str, Any]:
  """F's model-bootstrap interval (``--bootstrap``) and F / F_ceiling (where the setup's ceiling is known)."""
  from unlearn_jax import ceiling
  b = (results.get("bootstrap") or {}).get("forgetting_quality")
  c = ceiling.of_results(results)
  return {"F_95ci": f"[{b['lo']:.4f}, {b['hi']:.4f}]" if b else "",
          "F_over_ceiling": float(c["ratio"]) if c and c.get("ratio") is not None else float("nan")}


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4f}"
  return str(v)


def leaderboard_table(rows: Sequence[Mapping[str, Any]], fmt: str = "markdown") -> str:
  """The leaderboard as GitHub markdown or CSV."""
  if fmt == "csv":
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LEADERBOARD_COLUMNS)
    for row in rows:
      w.writerow([row[c] for c in LEADERBOARD_COLUMNS])
    return buf.getvalue()
  if fmt != "markdown":
    raise ValueError(f"unknown table format {fmt!r}; expected 'markdown' or 'csv'")
  cells = [[_fmt(row[c]) for c in LEADERBOARD_COLUMNS] for row in rows]
  widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(LEADERBOARD_COLUMNS)]
  line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
  out = [line(LEADERBOARD_COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
  out += [line(r) for r in cells]
  return "\n".join(out) + "\n"


def write_plots(results: Mapping[str, Any], output_dir: str, num_examples: int = 3) -> list[str]:
  """Epsilon histogram and best/worst-example confidence distributions as PNGs; returns the paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  arrays = results["_arrays"]
  eps = np.asarray(arrays["epsilons"], np.float64)
  u = np.asarray(arrays["unlearned_confidence"], np.float64)
  r = np.asarray(arrays["retrained_confidence"], np.float64)
  paths = []

  fig, ax = plt.subplots(figsize=(6, 4))
  ax.hist(np.clip(eps, 0, 50), bins=np.arange(0, max(8.0, float(np.ceil(eps.max()))) + 0.5, 0.5))
  ax.set_xlabel("per-example epsilon (clipped to [0, 50])")
  ax.set_ylabel("forget examples")
  ax.set_title(f"{results['method']} on {results['dataset']}: F = {results['forgetting_quality']:.4f}, "
               f"N = {results['num_models_scored']}")
  fig.tight_layout()
  paths.append(os.path.join(output_dir, "epsilons.png"))
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)

  order = np.argsort(eps, kind="stable")
  k = min(num_examples, len(eps))
  for label, picks in (("best", order[:k]), ("worst", order[::-1][:k])):
    fig, axes = plt.subplots(1, k, figsize=(4 * k, 3.2), squeeze=False)
    for ax, s in zip(axes[0], picks):
      lo, hi = min(u[:, s].min(), r[:, s].min()), max(u[:, s].max(), r[:, s].max())
      bins = np.linspace(lo, hi + 1e-9, 30)
      ax.hist(r[:, s], bins=bins, alpha=0.55, label="retrained")
      ax.hist(u[:, s], bins=bins, alpha=0.55, label="unlearned")
      ax.set_title(f"example {s}: eps {eps[s]:.2f}")
      ax.set_xlabel("logit-scaled confidence")
    axes[0][0].legend()
    fig.suptitle(f"{label} forget examples ({results['method']})")
    fig.tight_layout()
    paths.append(os.path.join(output_dir, f"confidences_{label}.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  return paths
