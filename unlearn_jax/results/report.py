"""Host-side reports: ``results.json``, the leaderboard table and the plots.

Everything here is NumPy / JSON / matplotlib (Agg backend) on numbers that
the protocol already computed; nothing is jitted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from unlearn_jax import checkpoint, files
from unlearn_jax.results import ceiling, setups, untrusted
from unlearn_jax.results.record import Populations

RESULTS_FILE = "results.json"
MAX_RESULTS_BYTES = 64 << 20  # results.json read by compare, leaderboard, stability, sweep: about 3 million epsilons
LEADERBOARD_COLUMNS = ("rank", "method", "dataset", "N", "final_score", "forgetting_quality", "F_95ci", "F_over_ceiling",
                       "retain_acc_U", "test_acc_U", "forget_acc_U", "retain_acc_R", "test_acc_R", "mia_U", "cost_rel",
                       "dir", "hyperparameters", "flag")
CSV_COLUMNS = LEADERBOARD_COLUMNS + ("setup",)


def write_results(results: Mapping[str, Any], output_dir: str) -> str:
  """Writes the ``results.json`` record ``results`` atomically; returns the path."""
  path = os.path.join(output_dir, RESULTS_FILE)
  checkpoint.atomic_write_text(path, json.dumps(dict(results), indent=1, allow_nan=True) + "\n")
  return path


def read_results(path: str) -> dict[str, Any]:
  """Reads ``results.json`` from a file or a run directory; raises ``ValueError`` on bad input.

  The file must be a regular file (not a FIFO, a device or a symbolic link) of at most
  :data:`MAX_RESULTS_BYTES`, refused before it is read. Beyond being JSON, it must be an object whose fields pass
  :func:`unlearn_jax.results.untrusted.check_results` (types, ranges, N >= 2, and F
  recomputed from the per-example epsilons).
  """
  if os.path.isdir(path):
    path = os.path.join(path, RESULTS_FILE)
  if not os.path.exists(path):
    raise ValueError(f"no results file at {path!r}; run 'unlearn-jax evaluate' first")
  try:  # a regular file only (never a FIFO, a device or through a link), refused over the bound before reading
    text = files.read_regular(path, MAX_RESULTS_BYTES, "results file")
  except files.BadFile as err:
    raise ValueError(str(err)) from None
  except OSError as err:
    raise ValueError(f"cannot read results file {path!r}: {err.strerror or err}") from None
  try:
    data = json.loads(text.decode("utf-8"))
  except (ValueError, RecursionError) as err:  # ValueError: bad JSON, UTF-8 or over-long integers
    raise ValueError(f"cannot read results file {path!r}: {' '.join(str(err).split())[:200]}") from None
  if not isinstance(data, dict):
    raise ValueError(f"results file {path!r} must hold a JSON object, got {type(data).__name__}")
  untrusted.check_results(data, f"results file {path!r}")  # every field the commands use, cross-checked
  return data


def _is_number(value: Any, allow_null: bool = False) -> bool:
  """A JSON number a float holds (not a bool, nor an integer beyond float range such as ``10**400``)."""
  if value is None:
    return allow_null
  return untrusted.as_number(value) is not None


def leaderboard_rows(paths: Sequence[str], strict: bool = False) -> list[dict[str, Any]]:
  """One row per results file, grouped by setup and ranked by final score within each group (best first).

  Results are comparable only on the same setup (:mod:`unlearn_jax.results.setups`):
  groups keep the order of their first result, ``rank`` counts within a group,
  and every row carries its group's ``setup`` description. ``strict``: raise a
  one-line ``ValueError`` instead when the setups differ.
  """
  paths = expand_runs(paths)
  results = [read_results(p) for p in paths]
  if strict:
    setups.require_same_setup(results, list(paths))
  labels = setup_labels(results)
  out = []
  for group in setups.group_by_setup(results):
    rows = [_row(results[i], paths[i], labels[i]) for i in group]
    rows.sort(key=lambda row: -row["final_score"] if math.isfinite(row["final_score"]) else math.inf)
    for i, row in enumerate(rows):
      row["rank"] = i + 1
    _differing_hyperparameters(rows)
    out += rows
  return out


def expand_runs(paths: Sequence[str]) -> list[str]:
  """``paths`` with every sweep folder replaced by its points (``unlearn-jax leaderboard runs/*``).

  A directory without a ``results.json`` whose subdirectories hold them (a ``sweep``
  output: one folder per point, and ``confirm-*``) stands for those subdirectories, in
  name order; anything else is kept as given (and read, or refused, as a results file).
  """
  out: list[str] = []
  for path in paths:
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, RESULTS_FILE)):
      try:
        names = sorted(os.listdir(path))
      except OSError:
        names = []
      inner = [os.path.join(path, n) for n in names
               if not os.path.islink(os.path.join(path, n)) and os.path.isfile(os.path.join(path, n, RESULTS_FILE))]
      if inner:
        out += inner
        continue
    out.append(path)
  return out


def value_text(value: Any) -> str:
  """A hyperparameter value as tables write it: ``0.0001`` -> ``0.0001``, ``1e-05``, ``True``, ``kit``."""
  if isinstance(value, float):
    return f"{value:g}"
  return value if isinstance(value, str) else json.dumps(value)


def _differing_hyperparameters(rows: Sequence[dict[str, Any]]) -> None:
  """Sets each row's ``hyperparameters`` cell: ``k=v`` for the keys whose values differ between the
  rows of the same method (a key some of them lack counts as differing; a method with one row: empty)."""
  hps = [row.pop("_hp", None) for row in rows]
  hps = [hp if isinstance(hp, Mapping) else {} for hp in hps]
  text = lambda hp, k: json.dumps(hp[k], sort_keys=True, default=repr) if k in hp else None
  by_method: dict[str, list[int]] = {}
  for i, row in enumerate(rows):
    by_method.setdefault(row.get("method"), []).append(i)
  for members in by_method.values():
    keys: list[str] = []
    for i in members:
      keys += [k for k in hps[i] if k not in keys]
    differ = [k for k in keys if len({text(hps[i], k) for i in members}) > 1]
    for i in members:
      rows[i]["hyperparameters"] = " ".join(f"{k}={value_text(hps[i][k])}" for k in differ if k in hps[i])


def setup_labels(results: Sequence[Mapping[str, Any]]) -> list[str]:
  """Each result's setup as :func:`setups.describe` words it, made distinct where two setups word alike.

  A setup whose description equals an earlier, different setup's gets the
  fields it differs in appended, e.g. ``... / N=8 (differs in: recipe)``.
  """
  labels: list[str] = []
  first_by_key: dict[str, int] = {}
  first_by_text: dict[str, int] = {}
  for i, r in enumerate(results):
    key = setups.setup_key(r)
    if key in first_by_key:
      labels.append(labels[first_by_key[key]])
      continue
    first_by_key[key] = i
    text = setups.describe(setups.setup_of(r))
    if text in first_by_text:
      text += f" (differs in: {', '.join(setups.differences(results[first_by_text[text]], r))})"
    else:
      first_by_text[text] = i
    labels.append(text)
  return labels


def _row(r: Mapping[str, Any], path: str, setup: str) -> dict[str, Any]:
  u, rt = r.get("unlearned", {}), r.get("retrained", {})
  mean = lambda d, k: _float(d.get(k, {}).get("mean"))
  return {
      "method": r["method"], "dataset": r.get("dataset", "?"), "N": r.get("num_models_scored", r.get("num_models")),
      "final_score": _float(r["final_score"]), "forgetting_quality": _float(r["forgetting_quality"]),
      **_uncertainty_cells(r),
      "retain_acc_U": mean(u, "retain_accuracy"), "test_acc_U": mean(u, "test_accuracy"),
      "forget_acc_U": mean(u, "forget_accuracy"), "retain_acc_R": mean(rt, "retain_accuracy"),
      "test_acc_R": mean(rt, "test_accuracy"), "mia_U": _float(r.get("mia", {}).get("unlearned")),
      "cost_rel": _float(r.get("cost", {}).get("relative_to_retrain")),
      "dir": os.path.dirname(path) if path.endswith(RESULTS_FILE) else path,
      "flag": degenerate_flag(r.get("degenerate")),
      "_hp": r.get("hyperparameters"),
      "setup": setup,
  }


def _float(v: Any) -> float:
  """A checked number of a results file as float; ``None`` (absent or null) is NaN."""
  return float("nan") if v is None else float(v)


def degenerate_flag(check: Any) -> str:
  """The leaderboard's note on :mod:`unlearn_jax.analysis.degenerate`'s check: ``no-op (...)`` when flagged,
  empty when passed, ``unchecked`` for results written before the check existed."""
  if not isinstance(check, Mapping):
    return "unchecked"
  if not check.get("flagged"):
    return ""
  return f"no-op ({', '.join(map(str, check.get('reasons') or []))})"


def _uncertainty_cells(results: Mapping[str, Any]) -> dict[str, Any]:
  """F's model-bootstrap interval (``--bootstrap``) and F / F_ceiling (where the setup's ceiling is known)."""
  b = results.get("bootstrap")
  b = b.get("forgetting_quality") if isinstance(b, Mapping) else None
  ok = isinstance(b, Mapping) and _is_number(b.get("lo")) and _is_number(b.get("hi"))
  c = ceiling.of_results(results) if results.get("forgetting_quality") is not None else None
  ratio = c.get("ratio") if c else None
  return {"F_95ci": f"[{b['lo']:.4f}, {b['hi']:.4f}]" if ok else "",
          "F_over_ceiling": float(ratio) if _is_number(ratio) else float("nan")}


def _fmt(v: Any) -> str:
  """A markdown cell: floats to 4 decimals, text escaped (control characters, ``|``)."""
  if isinstance(v, float):
    return f"{v:.4f}"
  return untrusted.markdown_cell(v)


def leaderboard_table(rows: Sequence[Mapping[str, Any]], fmt: str = "markdown") -> str:
  """The leaderboard as GitHub markdown or CSV.

  Markdown: one table per setup, each under a ``### setup: ...`` heading when
  the rows span several setups (a single setup prints its table alone). CSV:
  one table with a trailing ``setup`` column (ranks count within a setup).
  """
  if fmt == "csv":
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in rows:
      w.writerow([_csv_cell(row.get(c, "")) for c in CSV_COLUMNS])
    return buf.getvalue()
  if fmt != "markdown":
    raise ValueError(f"unknown table format {fmt!r}; expected 'markdown' or 'csv'")
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault(row.get("setup", ""), []).append(row)
  if len(groups) <= 1:
    return markdown_table(LEADERBOARD_COLUMNS, rows)
  return "\n".join(f"### setup: {untrusted.terminal_text(setup)}\n\n" + markdown_table(LEADERBOARD_COLUMNS, group)
                   for setup, group in groups.items())


def _csv_cell(v: Any) -> Any:
  """Text of a CSV cell with control characters escaped (the table is printed to the terminal too)."""
  return untrusted.terminal_text(v) if isinstance(v, str) else v


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
  """A GitHub markdown table of ``rows`` (floats to 4 decimals), columns padded to align."""
  cells = [[_fmt(row[c]) for c in columns] for row in rows]
  widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
  line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
  out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
  out += [line(r) for r in cells]
  return "\n".join(out) + "\n"


def save_figure(fig, path: str) -> None:
  """Renders ``fig`` as PNG in memory, closes it, and writes it to ``path`` atomically."""
  import matplotlib.pyplot as plt

  buf = io.BytesIO()
  try:
    fig.savefig(buf, format="png", dpi=100)
  finally:
    plt.close(fig)
  checkpoint.atomic_write_bytes(path, buf.getvalue())


def write_plots(results: Mapping[str, Any], output_dir: str, num_examples: int = 3, *,
                populations: Populations) -> list[str]:
  """Epsilon histogram and best/worst-example confidence distributions of ``results`` (scored on
  ``populations``) as PNGs; returns the paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  eps = np.asarray(populations.epsilons, np.float64)
  u = np.asarray(populations.unlearned["forget_confidence"], np.float64)
  r = np.asarray(populations.retrained["forget_confidence"], np.float64)
  paths = []

  fig, ax = plt.subplots(figsize=(6, 4))
  ax.hist(np.clip(eps, 0, 50), bins=np.arange(0, max(8.0, float(np.ceil(eps.max()))) + 0.5, 0.5))
  ax.set_xlabel("per-example epsilon (clipped to [0, 50])")
  ax.set_ylabel("forget examples")
  ax.set_title(f"{results['method']} on {results['dataset']}: F = {results['forgetting_quality']:.4f}, "
               f"N = {results['num_models_scored']}")
  fig.tight_layout()
  paths.append(os.path.join(output_dir, "epsilons.png"))
  save_figure(fig, paths[-1])

  order = np.argsort(eps, kind="stable")
  k = min(num_examples, len(eps))
  for label, picks in (("best", order[:k]), ("worst", order[::-1][:k])):
    fig, axes = plt.subplots(1, k, figsize=(4 * k, 3.4), squeeze=False, layout="constrained")
    for ax, s in zip(axes[0], picks):
      lo, hi = min(u[:, s].min(), r[:, s].min()), max(u[:, s].max(), r[:, s].max())
      bins = np.linspace(lo, hi + 1e-9, 30)
      ax.hist(r[:, s], bins=bins, alpha=0.55, label="retrained")
      ax.hist(u[:, s], bins=bins, alpha=0.55, label="unlearned")
      ax.set_title(f"example {s}: eps {eps[s]:.2f}")
      ax.set_xlabel("logit-scaled confidence")
      ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # counts of models
    axes[0][0].set_ylabel("models")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside upper right", ncol=2, frameon=False)
    fig.suptitle(f"{label} forget examples ({results['method']})")
    paths.append(os.path.join(output_dir, f"confidences_{label}.png"))
    save_figure(fig, paths[-1])
  return paths
