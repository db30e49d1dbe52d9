"""How many models are enough: method rankings from subsamples of the stored populations.

Given the populations of several methods on one setup (:mod:`unlearn_jax.results.populations`),
for each n in 8, 16, 32, ..., N: draw R subsamples of n unlearned and, independently, n
retrained model indices without replacement (the same indices for every method), score F
of every method on every subsample, and report

* what a fresh evaluation at n gives: Kendall's tau between one subsample's ranking and the
  ranking at N, its mean over subsamples (``mean_tau``) with the central interval of the
  subsamples' taus (``tau_lo``, ``tau_hi``: the spread of single evaluations, not an interval
  of the mean); and, where ``2 n <= N``, tau between the rankings of two subsamples with no
  model in common (``disjoint_tau`` with ``disjoint_lo``, ``disjoint_hi``): how well two
  independent evaluations at n agree, free of the overlap that makes a subsample of nearly N
  models agree with the ranking at N;
* each method's mean F and its spread over the subsamples, and the tau of the ranking of the
  mean F (``tau_of_means``: R subsamples pooled, which no single evaluation at n has).

All subsamples of one n, for all methods, are scored by one call of the metric: the
subsampled ``[n, E]`` confidence matrices are laid side by side as ``[n, M * R * E]``
(the metric treats examples independently) and the per-example points are averaged back
per method and subsample.
"""

from __future__ import annotations

import csv
import io
import warnings
from typing import Any, Optional, Sequence

import numpy as np


DEFAULT_REPEATS = 20
COLUMNS = ("n", "method", "mean_tau", "tau_lo", "tau_hi", "disjoint_tau", "disjoint_lo", "disjoint_hi", "mean_F",
           "std_F", "lo_F", "hi_F", "tau_of_means", "flag")


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


def _mean_and_spread(taus: Sequence[float], tail: float) -> tuple[float, float, float]:
  """Mean and central percentile interval of the finite taus; NaN where none is finite."""
  finite = np.asarray([t for t in taus if np.isfinite(t)], np.float64)
  if finite.size == 0:
    return float("nan"), float("nan"), float("nan")
  lo, hi = np.quantile(finite, [tail, 1.0 - tail])
  return float(finite.mean()), float(lo), float(hi)


def stability(methods: Sequence[str], unlearned: Sequence[np.ndarray], retrained: Sequence[np.ndarray], *,
              sizes: Optional[Sequence[int]] = None, repeats: int = DEFAULT_REPEATS, seed: int = 0,
              level: float = 0.95, flags: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """Per n: Kendall's tau of single subsamples' rankings against the full-N ranking (mean and the spread
  of the subsamples), tau between two disjoint subsamples' rankings (``2 n <= N``), each method's mean F,
  standard deviation and percentile interval over ``repeats`` subsamples, and the tau of the ranking of
  the mean F.

  Subsample r of size n takes the first n models of a random permutation of each population;
  its disjoint partner takes the next n of the same permutations.

  ``flags`` are the methods' no-op flags (:func:`unlearn_jax.results.report.degenerate_flag` of each
  result's check at N; default empty), carried into every row of the method and ``"flags"``: a flagged
  method's F, at any n, does not measure forgetting.

  Returns ``{"num_models", "repeats", "seed", "level", "full": {method: F}, "flags": {method: flag},
  "rows": [{n, method, mean_tau, tau_lo, tau_hi, disjoint_tau, disjoint_lo, disjoint_hi, mean_F, std_F,
  lo_F, hi_F, tau_of_means, flag}]}``; tau is NaN where a ranking is all ties (such subsamples are left out of the
  mean and interval) and the disjoint columns are NaN where ``2 n > N``.
  """
  if len(methods) < 2:
    raise ValueError(f"stability needs results of at least 2 methods, got {len(methods)}")
  shapes = {np.asarray(p).shape for p in list(unlearned) + list(retrained)}
  if len(shapes) != 1:
    raise ValueError(f"all populations must have one shape [N, E], got {sorted(shapes)}")
  if int(repeats) != repeats or repeats < 1:
    raise ValueError(f"--repeats must be an integer >= 1, got {repeats}")
  flags = [""] * len(methods) if flags is None else [str(f) for f in flags]
  if len(flags) != len(methods):
    raise ValueError(f"one flag per method: got {len(flags)} flags for {len(methods)} methods")
  num_models = int(np.asarray(unlearned[0]).shape[0])
  everyone = np.arange(num_models)[None, :]
  full = subsampled_quality(unlearned, retrained, everyone, everyone)[:, 0]
  rng = np.random.default_rng(seed)
  tail = (1.0 - level) / 2.0
  nan3 = (float("nan"),) * 3
  rows = []
  for n in subsample_sizes(num_models, sizes):
    disjoint = nan3
    if n == num_models:  # every subsample is a permutation of all models: F is the full F
      scores = np.repeat(full[:, None], repeats, axis=1)
    else:
      draw = lambda: np.stack([rng.permutation(num_models) for _ in range(repeats)])
      u_perm = draw()
      r_perm = draw()
      pair = 2 * n <= num_models  # a second subsample of n models disjoint from the first
      width = 2 * n if pair else n
      both = subsampled_quality(unlearned, retrained, u_perm[:, :width].reshape(-1, n),
                                r_perm[:, :width].reshape(-1, n)).reshape(len(methods), repeats, -1)
      scores = both[:, :, 0]
      if pair:
        disjoint = _mean_and_spread([_tau(both[:, k, 0], both[:, k, 1]) for k in range(repeats)], tail)
    means = scores.mean(axis=1)
    tau_means = _tau(means, full)
    single = _mean_and_spread([_tau(scores[:, k], full) for k in range(repeats)], tail)
    for m, name in enumerate(methods):
      lo, hi = np.quantile(scores[m], [tail, 1.0 - tail])
      rows.append({"n": n, "method": name, "mean_tau": single[0], "tau_lo": single[1], "tau_hi": single[2],
                   "disjoint_tau": disjoint[0], "disjoint_lo": disjoint[1], "disjoint_hi": disjoint[2],
                   "mean_F": float(means[m]), "std_F": float(scores[m].std()), "lo_F": float(lo), "hi_F": float(hi),
                   "tau_of_means": tau_means, "flag": flags[m]})
  return {"num_models": num_models, "repeats": int(repeats), "seed": int(seed), "level": float(level),
          "full": {name: float(f) for name, f in zip(methods, full)}, "flags": dict(zip(methods, flags)),
          "rows": rows}


def table(result: dict[str, Any], fmt: str = "markdown") -> str:
  """The rows as a GitHub markdown (4 decimals) or CSV (full precision) table."""
  if fmt == "csv":  # full precision, cells quoted where they hold a comma (a flag's reasons, a folder)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in result["rows"]:
      w.writerow([r.get(c, "") for c in COLUMNS])
    return buf.getvalue()
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
  fig, (ax_f, ax_t) = plt.subplots(1, 2, figsize=(10, 5.6), layout="constrained")
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
    flag = result.get("flags", {}).get(name)
    handles.append(Line2D([], [], color=color, marker="o", label=f"{name} [{flag}]" if flag else name))
  handles.append(Line2D([], [], color="gray", marker="*", ms=11, markeredgecolor="k", ls="none",
                        label=f"full N = {full_n} (reference)"))
  ax_f.set_xscale("log", base=2)
  ax_f.set_xlabel("models per population (n)")
  ax_f.set_ylabel(f"forgetting quality F (mean, {100 * result['level']:g}% of subsamples)")
  ax_f.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
  first = {n: next(r for r in rows if r["n"] == n) for n in sizes}
  if sizes:
    ax_t.plot(sizes, [first[n]["mean_tau"] for n in sizes], marker="s", color="k",
              label=f"one evaluation at n vs N (band: {100 * result['level']:g}% of subsamples)")
    ax_t.fill_between(sizes, [first[n]["tau_lo"] for n in sizes], [first[n]["tau_hi"] for n in sizes], color="k",
                      alpha=0.12, lw=0)
    pairs = [n for n in sizes if np.isfinite(first[n]["disjoint_tau"])]
    if pairs:
      ax_t.plot(pairs, [first[n]["disjoint_tau"] for n in pairs], marker="D", color="0.45", ls="--",
                label="two disjoint evaluations at n (hatched band)")
      ax_t.fill_between(pairs, [first[n]["disjoint_lo"] for n in pairs], [first[n]["disjoint_hi"] for n in pairs],
                        color="0.45", alpha=0.12, lw=0, hatch="//")
    ax_t.plot(sizes, [first[n]["tau_of_means"] for n in sizes], marker="o", color="0.7",
              label="the subsamples' mean F, ranked, vs N")
  ax_t.axhline(1.0, ls=":", color="gray", label=f"the ranking at N = {full_n} itself (tau = 1)")
  ax_t.set_xscale("log", base=2)
  ax_t.set_xlim((min(sizes) if sizes else full_n) / 1.3, full_n * 1.3)
  ax_f.set_xlim((min(sizes) if sizes else full_n) / 1.3, full_n * 1.3)
  if not sizes:
    ax_t.text(0.5, 0.5, f"no subsample size below N = {full_n}", transform=ax_t.transAxes, ha="center", color="0.4")
  ax_t.set_ylim(-1.05, 1.1)
  ax_t.set_xlabel("models per population (n)")
  ax_t.set_ylabel("Kendall's tau between rankings")
  ax_t.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize=8, frameon=False)
  import textwrap
  fig.suptitle("\n".join(textwrap.wrap(title or f"ranking stability over {result['repeats']} subsamples per n",
                                       130)), fontsize=10)
  from unlearn_jax.results import report
  report.save_figure(fig, path)
  return path
