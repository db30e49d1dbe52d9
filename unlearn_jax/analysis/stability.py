"""How many models are enough: method rankings from subsamples of the stored populations.

Given the populations of several methods on one setup (:mod:`unlearn_jax.results.populations`),
for each n in 8, 16, 32, ..., N: draw R subsamples of n unlearned and, independently, n
retrained model indices without replacement (the same indices for every method), score F
of every method on every subsample, and report each method's mean F and spread and
Kendall's tau between the ranking at n and the ranking at N.

All subsamples of one n, for all methods, are scored by one call of the metric: the
subsampled ``[n, E]`` confidence matrices are laid side by side as ``[n, M * R * E]``
(the metric treats examples independently) and the per-example points are averaged back
per method and subsample.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np


DEFAULT_REPEATS = 20
COLUMNS = ("n", "method", "mean_F", "std_F", "lo_F", "hi_F", "tau_of_means", "mean_tau")


def subsample_sizes(num_models: int, sizes: Optional[Sequence[int]] = None) -> list[int]:
  """The n to try: ``sizes`` (checked), or 8, 16, 32, ... below N, then N itself."""
  if sizes is not None:
    bad = [s for s in sizes if int(s) != s or not 2 <= s <= num_models]
    if bad or not sizes:
      raise ValueError(f"subsample sizes must be integers in [2, {num_models}], got {list(sizes)}")
    return sorted({int(s) for s in sizes})
  out, n = [], 8
  while n < num_models:
    out.append(n)
    n *= 2
  return out + [int(num_models)]


def subsampled_quality(unlearned: Sequence[np.ndarray], retrained: Sequence[np.ndarray], unlearned_idx: np.ndarray,
                       retrained_idx: np.ndarray) -> np.ndarray:
  """``[M, R]`` F of each of M methods on each of R subsamples (one metric call for all of them).

  ``unlearned[m]`` / ``retrained[m]`` are method m's ``[N, E]`` confidences;
  ``unlearned_idx`` / ``retrained_idx`` ``[R, n]`` the model indices of each subsample.
  """
  from unlearn_jax.metrics import forgetting_metric
  u_idx, r_idx = np.asarray(unlearned_idx), np.asarray(retrained_idx)
  reps, n = u_idx.shape
  num_examples = np.asarray(unlearned[0]).shape[1]
  # [M, R, n, E] -> [n, M * R * E]
  stack = lambda pops, idx: np.stack([np.asarray(p, np.float64)[idx] for p in pops]).transpose(2, 0, 1, 3).reshape(
      n, -1)
  points = forgetting_metric(stack(unlearned, u_idx), stack(retrained, r_idx)).points
  return points.reshape(len(unlearned), reps, num_examples).mean(axis=2)


def _tau(x: np.ndarray, y: np.ndarray) -> float:
  from scipy import stats
  with warnings.catch_warnings():  # constant input: tau is undefined (NaN), which is what we report
    warnings.simplefilter("ignore")
    return float(stats.kendalltau(x, y).statistic)


def stability(methods: Sequence[str], unlearned: Sequence[np.ndarray], retrained: Sequence[np.ndarray], *,
              sizes: Optional[Sequence[int]] = None, repeats: int = DEFAULT_REPEATS, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
  """Per n: each method's mean F, standard deviation and percentile interval over ``repeats`` subsamples,
  and Kendall's tau against the full-N ranking (of the mean F; and the mean over subsamples of each
  subsample's own ranking).

  Returns ``{"num_models", "repeats", "seed", "full": {method: F}, "rows": [{n, method, mean_F,
  std_F, lo_F, hi_F, tau_of_means, mean_tau}]}``; tau is NaN where a ranking is all ties.
  """
  if len(methods) < 2:
    raise ValueError(f"stability needs results of at least 2 methods, got {len(methods)}")
  shapes = {np.asarray(p).shape for p in list(unlearned) + list(retrained)}
  if len(shapes) != 1:
    raise ValueError(f"all populations must have one shape [N, E], got {sorted(shapes)}")
  if int(repeats) != repeats or repeats < 1:
    raise ValueError(f"--repeats must be an integer >= 1, got {repeats}")
  num_models = int(np.asarray(unlearned[0]).shape[0])
  everyone = np.arange(num_models)[None, :]
  full = subsampled_quality(unlearned, retrained, everyone, everyone)[:, 0]
  rng = np.random.default_rng(seed)
  tail = (1.0 - level) / 2.0
  rows = []
  for n in subsample_sizes(num_models, sizes):
    if n == num_models:  # every subsample is a permutation of all models: F is the full F
      scores = np.repeat(full[:, None], repeats, axis=1)
    else:
      draw = lambda: np.stack([rng.permutation(num_models)[:n] for _ in range(repeats)])
      u_idx = draw()
      scores = subsampled_quality(unlearned, retrained, u_idx, draw())
    means = scores.mean(axis=1)
    tau_means = _tau(means, full)
    tau_each = [_tau(scores[:, r], full) for r in range(repeats)]
    mean_tau = float(np.nanmean(tau_each)) if np.any(np.isfinite(tau_each)) else float("nan")
    for m, name in enumerate(methods):
      lo, hi = np.quantile(scores[m], [tail, 1.0 - tail])
      rows.append({"n": n, "method": name, "mean_F": float(means[m]), "std_F": float(scores[m].std()),
                   "lo_F": float(lo), "hi_F": float(hi), "tau_of_means": tau_means, "mean_tau": mean_tau})
  return {"num_models": num_models, "repeats": int(repeats), "seed": int(seed), "level": float(level),
          "full": {name: float(f) for name, f in zip(methods, full)}, "rows": rows}


def table(result: dict[str, Any], fmt: str = "markdown") -> str:
  """The rows as a GitHub markdown (4 decimals) or CSV (full precision) table."""
  if fmt == "csv":  # full precision
    lines = [",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in result["rows"]]
    return "\n".join(lines) + "\n"
  if fmt != "markdown":
    raise ValueError(f"unknown table format {fmt!r}; expected 'markdown' or 'csv'")
  from unlearn_jax.results import report
  return report.markdown_table(COLUMNS, result["rows"])


def write_plot(result: dict[str, Any], path: str, title: str = "") -> str:
  """Mean F with its interval per method against n, and Kendall's tau against n; a PNG written atomically.

  The subsampled sizes n < N are drawn as lines with their bands; the full N is the
  reference every subsample is compared with (its F is each method's own, its tau 1 by
  definition), so it is drawn as a reference: a star per method joined by a dotted line,
  and a dotted line at tau = 1, never a zero-width band. Colours name methods only (the tau
  lines are black and gray); legends sit below the axes.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.lines import Line2D

  rows = result["rows"]
  full_n = int(result["num_models"])
  sizes = sorted({r["n"] for r in rows if r["n"] < full_n})
  fig, (ax_f, ax_t) = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
  handles = []
  for i, name in enumerate(result["full"]):
    color = f"C{i % 10}"
    mine = sorted((r for r in rows if r["method"] == name and r["n"] < full_n), key=lambda r: r["n"])
    n = [r["n"] for r in mine]
    if n:
      ax_f.plot(n, [r["mean_F"] for r in mine], marker="o", color=color)
      ax_f.fill_between(n, [r["lo_F"] for r in mine], [r["hi_F"] for r in mine], color=color, alpha=0.2, lw=0)
      ax_f.plot([n[-1], full_n], [mine[-1]["mean_F"], result["full"][name]], ls=":", color=color)
    ax_f.plot([full_n], [result["full"][name]], marker="*", ms=13, color=color, markeredgecolor="k", ls="none")
    handles.append(Line2D([], [], color=color, marker="o", label=name))
  handles.append(Line2D([], [], color="gray", marker="*", ms=11, markeredgecolor="k", ls="none",
                        label=f"full N = {full_n} (reference)"))
  ax_f.set_xscale("log", base=2)
  ax_f.set_xlabel("models per population (n)")
  ax_f.set_ylabel(f"forgetting quality F (mean, {100 * result['level']:g}% of subsamples)")
  ax_f.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(handles)),
              fontsize=8, frameon=False)
  first = {n: next(r for r in rows if r["n"] == n) for n in sizes}
  if sizes:
    ax_t.plot(sizes, [first[n]["tau_of_means"] for n in sizes], marker="o", color="k", label="ranking of mean F")
    ax_t.plot(sizes, [first[n]["mean_tau"] for n in sizes], marker="s", color="0.5",
              label="one subsample's ranking (mean)")
  ax_t.axhline(1.0, ls=":", color="gray", label=f"the ranking at N = {full_n} itself (tau = 1)")
  ax_t.set_xscale("log", base=2)
  ax_t.set_xlim((min(sizes) if sizes else full_n) / 1.3, full_n * 1.3)
  ax_f.set_xlim((min(sizes) if sizes else full_n) / 1.3, full_n * 1.3)
  if not sizes:
    ax_t.text(0.5, 0.5, f"no subsample size below N = {full_n}", transform=ax_t.transAxes, ha="center", color="0.4")
  ax_t.set_ylim(-1.05, 1.1)
  ax_t.set_xlabel("models per population (n)")
  ax_t.set_ylabel(f"Kendall's tau vs the ranking at N = {full_n}")
  ax_t.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
  import textwrap
  fig.suptitle("\n".join(textwrap.wrap(title or f"ranking stability over {result['repeats']} subsamples per n",
                                       110)), fontsize=10)
  from unlearn_jax.results import report
  report.save_figure(fig, path)
  return path
