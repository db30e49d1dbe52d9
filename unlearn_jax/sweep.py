"""Hyperparameter sweeps that share one reference population.

A sweep scores one unlearning method at every point of a grid of its
hyperparameters (the Cartesian product of ``{name: [values]}``) on one setup.
The expensive part of every evaluation, the original model and the N retrained
models, is the same for all points: :func:`run_sweep` builds it once
(:func:`unlearn_jax.protocol.run.prepare`, itself cached across runs) and then runs
only the unlearning and scoring stages per point
(:func:`unlearn_jax.protocol.run.evaluate_method`).

Checks come first: the grid's keys and values are checked against the method's
declared hyperparameters (:mod:`unlearn_jax.unlearning.hparams`) and every
point's method is built before anything is trained, so a typo costs nothing.

Outputs under the sweep directory:

* ``<point>/results.json`` (+ plots): a normal result directory per point, so
  ``unlearn-jax leaderboard DIR/*`` reads them; its resumable unlearning chunks
  live in ``<point>/chunks``;
* ``sweep.md`` / ``sweep.csv``: the points ranked by final score;
* ``sweep.json``: the same rows plus the grid, the best point and the confirmation;
* ``sweep.png``: forgetting quality / final score and retain / test accuracy
  against each swept hyperparameter.

Resuming: a point whose ``results.json`` matches (method, hyperparameters,
source, seeds and setup) is read back instead of recomputed, and a point
killed midway continues from its saved unlearning chunks.

Selection bias (``confirm``): the best of many noisy scores is optimistic. The
best point is evaluated again with a fresh stream of unlearning seeds
(``EvalConfig.unlearn_seed``; default ``seed + 1``) against the *same* original
and retrained models. The retrained population is shared by every point, so its
noise shifts all points alike and is not what the selection picked; the
unlearned models are what differ between points, and those are redrawn.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import re
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from unlearn_jax import checkpoint, files, plugins
from unlearn_jax.protocol import budget
from unlearn_jax.protocol import context as protocol_context
from unlearn_jax.protocol import run as protocol_run
from unlearn_jax.protocol.config import EvalConfig
from unlearn_jax.results import diagnostics, populations, report, setups
from unlearn_jax.results.progress import Progress
from unlearn_jax.results.record import jsonable

MAX_POINTS = 1000
TABLE_FILE, CSV_FILE, JSON_FILE, PLOT_FILE = "sweep.md", "sweep.csv", "sweep.json", "sweep.png"
METRIC_COLUMNS = ("final_score", "forgetting_quality", "retain_acc_U", "test_acc_U", "forget_acc_U", "mia_U",
                  "cost_rel")


@dataclasses.dataclass(frozen=True)
class Point:
  """One grid point: its directory name and the swept values (in grid order)."""

  name: str
  values: tuple[tuple[str, Any], ...]


# ------------------------------------------------------------------ the grid


def split_values(text: str) -> list[str]:
  """``"1e-4,3e-4"`` -> ``["1e-4", "3e-4"]``; commas inside brackets stay (``"[1,2],[3]"``: two values)."""
  out, depth, cur = [], 0, ""
  for ch in text:
    if ch in "[(":
      depth += 1
    elif ch in "])":
      depth -= 1
    if ch == "," and depth == 0:
      out.append(cur.strip())
      cur = ""
    else:
      cur += ch
  out.append(cur.strip())
  return out


def parse_grid_args(items: Sequence[str]) -> dict[str, list[str]]:
  """``--grid NAME=V1,V2,...`` arguments as ``{name: [text, ...]}`` (values still text)."""
  grid: dict[str, list[str]] = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--grid expects NAME=V1,V2,..., got {item!r}")
    name, text = (part.strip() for part in item.split("=", 1))
    if not name:
      raise ValueError(f"--grid expects NAME=V1,V2,..., got {item!r}")
    if name in grid:
      raise ValueError(f"--grid names {name!r} twice; list all its values in one --grid {name}=V1,V2,...")
    grid[name] = [v for v in split_values(text) if v != ""]
  return grid


def grid_from_config(value: Any) -> dict[str, list[Any]]:
  """A config's ``grid`` mapping: each value a list, a comma-separated string or a single value."""
  if value is None:
    return {}
  if not isinstance(value, Mapping):
    raise ValueError(f"config key 'grid' must map hyperparameter names to lists of values, got {value!r}")
  grid: dict[str, list[Any]] = {}
  for name, values in value.items():
    if isinstance(values, str):
      grid[str(name)] = [v for v in split_values(values) if v != ""]
    elif isinstance(values, (list, tuple)):
      grid[str(name)] = list(values)
    else:
      grid[str(name)] = [values]
  return grid


def check_grid(method_name: str, factory: Callable, grid: Mapping[str, Sequence[Any]],
               fixed: Mapping[str, Any] = ()) -> list[Point]:
  """The grid's points, every value checked against ``factory``'s declared hyperparameters.

  Text values are parsed by their declared kind; each point (``fixed`` overridden
  by its values) must pass :func:`hparams.validate`. Raises a one-line
  ``ValueError`` for an empty grid, a key without values, a repeated value, an
  unknown key, a bad value or more than :data:`MAX_POINTS` points.
  """
  from unlearn_jax.unlearning import hparams
  if not grid:
    raise ValueError("the sweep grid is empty: give at least one --grid NAME=V1,V2,... (or a 'grid' mapping "
                     "in the config)")
  decl = hparams.declared(factory)
  axes: dict[str, list[Any]] = {}
  for name, values in grid.items():
    if not values:
      raise ValueError(f"grid key {name!r} has no values; expected --grid {name}=V1,V2,...")
    parsed = [decl[name].parse(v) if isinstance(v, str) and name in decl else v for v in values]
    checked = [hparams.validate(method_name, factory, {name: v})[name] for v in parsed]
    seen = set()
    for v in checked:
      text = json.dumps(jsonable(v), sort_keys=True)
      if text in seen:
        raise ValueError(f"grid key {name!r} lists the value {v!r} twice")
      seen.add(text)
    axes[name] = checked
  count = math.prod(len(v) for v in axes.values())
  if count > MAX_POINTS:
    raise ValueError(f"the sweep grid has {count} points; at most {MAX_POINTS} are allowed")
  points, names = [], set()
  for combo in itertools.product(*axes.values()):
    values = tuple(zip(axes, combo))
    hparams.validate(method_name, factory, {**dict(fixed), **dict(values)})
    name = point_name(values)
    if name in names:
      raise ValueError(f"two grid points would share the directory {name!r}; make the values distinct")
    names.add(name)
    points.append(Point(name, values))
  return points


def point_name(values: Sequence[tuple[str, Any]]) -> str:
  """A directory name for a point, e.g. ``lr=0.001,epochs=3`` -> ``lr_0.001-epochs_3`` (safe characters only)."""
  parts = []
  for name, value in values:
    text = json.dumps(jsonable(value)) if not isinstance(value, str) else value
    parts.append(f"{name}_{text}")
  name = re.sub(r"[^A-Za-z0-9.+_-]+", "", "-".join(parts))[:200]
  return name or "point"


# ------------------------------------------------------------------ running


@dataclasses.dataclass
class SweepResult:
  """What :func:`run_sweep` returns: ranked rows, the best point and the confirmation (if any)."""

  method: str
  rows: list[dict[str, Any]]
  grid: dict[str, list[Any]]
  best: dict[str, Any]
  confirm: Optional[dict[str, Any]]
  reference: dict[str, Any]
  paths: dict[str, str]


def reusable(results: Mapping[str, Any], method: protocol_context.BuiltMethod, config: EvalConfig,
             ref: protocol_run.Reference, unlearn_seed: int, out_dir: Optional[str] = None) -> bool:
  """Whether a stored ``results`` is this point's result on this reference: same method, values, seeds and
  setup (:func:`unlearn_jax.results.setups.differences`), the same evaluations, and (with ``out_dir``) its
  populations file beside it."""
  m = method.method
  want_hp = json.dumps({k: jsonable(v) for k, v in dict(m.hyperparameters).items()}, sort_keys=True)
  if results.get("method") != m.name or results.get("source") != m.source:
    return False
  if json.dumps(results.get("hyperparameters"), sort_keys=True) != want_hp:
    return False
  if results.get("seed") != config.seed or results.get("unlearn_seed", config.seed) != unlearn_seed:
    return False
  if results.get("num_models") != config.num_models:
    return False
  if results.get("method_origin") != method.origin:  # a user's method: same file contents
    return False
  if results.get("metrics", ["competition"]) != list(config.metrics):
    return False
  if (results.get("bootstrap") or {}).get("num_draws", 0) != config.bootstrap:
    return False
  if config.with_ceiling and "ceiling" not in results:
    return False
  if out_dir is not None and not os.path.isfile(os.path.join(out_dir, populations.POPULATIONS_FILE)):
    return False
  # N may differ in the setups' records (dropped seeds): the point's own N was compared above
  expected = {"setup": protocol_run.reference_setup(ref)}
  return [k for k in setups.differences(results, expected) if k != "num_models"] == []


def _evaluate_point(ref: protocol_run.Reference, method: protocol_context.BuiltMethod, out_dir: str,
                    progress: Progress, plots: bool, unlearn_seed: Optional[int] = None) -> tuple[dict[str, Any], bool]:
  """``(results, reused)`` for one method on ``ref``, evaluated and written as ``evaluate`` would."""
  config = ref.ctx.config
  seed_u = config.seed if unlearn_seed is None else unlearn_seed
  path = os.path.join(out_dir, report.RESULTS_FILE)
  if os.path.exists(path):
    try:
      stored = report.read_results(path)
    except ValueError:
      stored = None
    if stored is not None and reusable(stored, method, config, ref, seed_u, out_dir):
      progress.line(f"[sweep] {out_dir}: finished earlier, results reused")
      return stored, True
  evaluation = protocol_run.evaluate_on(ref, method, progress, output_dir=out_dir, unlearn_seed=unlearn_seed,
                                        plots=plots)
  return evaluation.record, False


def plan(config: EvalConfig, grid: Mapping[str, Sequence[Any]], *, factory: Optional[Callable] = None,
         confirm_seed: Optional[int] = None, confirm: bool = False):
  """``(method source, points)``: the method resolved, the grid and the outputs checked, touching no file.

  The checks :func:`run_sweep` makes before anything else (callers may run them
  before creating directories); one-line ``ValueError`` on failure, or
  :class:`~unlearn_jax.files.NotARegularFile` when an output the sweep would write
  (``sweep.md/csv/json/png``, a point's ``results.json``, ``populations.npz`` or plots,
  and with ``confirm`` those of every possible confirmation folder) is a device, FIFO,
  folder or symbolic link, or the output folder is not a folder.
  """
  if config.process_count != 1:
    raise ValueError("sweep runs in a single process")
  source = plugins.resolve_method(config.method)  # a registry name, a plugin spec or a factory
  if source.built is not None:
    raise ValueError(f"method {source.name!r} was given as a built UnlearningMethod; a sweep needs its factory")
  points = check_grid(source.name, factory or source.factory, grid, dict(config.hyperparameters))
  if confirm_seed is not None and confirm_seed == config.seed:
    raise ValueError(f"--confirm-seed must differ from the sweep's seed {config.seed} (a fresh seed stream)")
  if config.output_dir is not None:  # outputs replace only regular files: refused before any work, as evaluate's
    files.check_output_folder(config.output_dir, (TABLE_FILE, CSV_FILE, JSON_FILE, PLOT_FILE))
    for p in points:
      for folder in (p.name, f"confirm-{p.name}") if confirm else (p.name,):
        files.check_output_folder(os.path.join(config.output_dir, folder))
  return source, points


def run_sweep(config: EvalConfig, grid: Mapping[str, Sequence[Any]], *,
              factory: Optional[Callable] = None, build: Optional[Callable] = None,
              progress: Optional[Progress] = None, plots: bool = True, confirm: bool = False,
              confirm_seed: Optional[int] = None) -> SweepResult:
  """Scores ``config.method`` at every point of ``grid``; writes the point directories and the sweep table.

  Args:
    config: the evaluation every point shares (its ``output_dir`` is the sweep directory,
      its ``hyperparameters`` the values the grid does not set).
    grid: ``{name: [values]}``; text values are parsed by the declared kinds.
    factory: the factory whose declarations check the grid (default: the one ``config.method``
      names: a registry entry, a ``path/to/file.py:make`` or ``module:make`` plugin, or a factory).
    build: ``(context, hyperparameters) -> BuiltMethod`` (default
      :func:`unlearn_jax.protocol.context.build_method`, which also records a user's method's file and hash).
    plots: write each point's plots and ``sweep.png``.
    confirm: evaluate the best point again with unlearning seed ``confirm_seed`` (default ``seed + 1``).

  Raises:
    ValueError: a bad grid, configuration or point (before any training), one line.
    ProtocolError: a point diverged (without ``allow_nan_drop``).
  """
  progress = progress or Progress()
  source, points = plan(config, grid, factory=factory, confirm_seed=confirm_seed, confirm=confirm)
  budget.attach(progress, config.max_hours)  # the sweep's estimated total after its first point, and --max-hours
  fixed = dict(config.hyperparameters)
  values = [{**fixed, **dict(p.values)} for p in points]
  methods: list[Any] = []
  t0 = time.perf_counter()
  if build is None:  # every point's method is built before anything is measured or trained
    ctx = protocol_context.build_context(config, progress, lambda c, model, recipe: methods.extend(
        protocol_context.build_method_for(c, model, recipe, hp) for hp in values))
  else:
    ctx = protocol_context.build_context(config, progress)
    methods = [build(ctx, hp) for hp in values]  # a factory that raises fails here
  ref = protocol_run.prepare(ctx, progress, load_s=time.perf_counter() - t0)
  progress.line(f"[sweep] {len(points)} point(s) of {config.method} against one reference "
                f"(N={config.num_models})")
  out_dir = config.output_dir
  os.makedirs(out_dir, exist_ok=True)
  rows, setup = [], None
  cost = budget.sweep_of(progress)  # the sweep's estimated total after its first point, and --max-hours
  if cost is not None:
    cost.start_points(len(points))
  for i, (point, method) in enumerate(zip(points, methods)):
    progress.line(f"[sweep] point {i + 1}/{len(points)}: {point.name}")
    results, reused = _evaluate_point(ref, method, os.path.join(out_dir, point.name), progress, plots)
    if cost is not None:
      cost.after_point(reused)
    rows.append(_row(point, results, reused))
    setup = setup or setups.setup_of(results)
  rank_rows(rows)
  best_row = rows[0]
  confirm_info = None
  if confirm:
    seed_c = config.seed + 1 if confirm_seed is None else confirm_seed
    best_method = methods[[p.name for p in points].index(best_row["point"])]
    cdir = os.path.join(out_dir, f"confirm-{best_row['point']}")
    progress.line(f"[sweep] confirming {best_row['point']} with unlearning seed {seed_c}")
    results, reused = _evaluate_point(ref, best_method, cdir, progress, plots, unlearn_seed=seed_c)
    confirm_info = {"point": best_row["point"], "unlearn_seed": seed_c, "dir": cdir, "reused": reused,
                    "final_score": float(results["final_score"]),
                    "forgetting_quality": float(results["forgetting_quality"]),
                    "retrained_redrawn": False}
    best_row["confirm_final_score"] = confirm_info["final_score"]
    best_row["confirm_forgetting_quality"] = confirm_info["forgetting_quality"]
  reference = {"setup": setups.describe(setup),
               "retain_acc_R": rows[0]["retain_acc_R"], "test_acc_R": rows[0]["test_acc_R"],
               "seed": config.seed, "cache": dict(ref.cache), "wall_s": dict(ref.walls)}
  result = SweepResult(source.name, rows, _axes(points), best_row, confirm_info, reference, {})
  result.paths = write_outputs(result, out_dir, plots)
  return result


def _axes(points: Sequence[Point]) -> dict[str, list[Any]]:
  """The grid's values per key (JSON values, in grid order, each once)."""
  axes: dict[str, dict[str, Any]] = {}
  for p in points:
    for k, v in p.values:
      v = jsonable(v)
      axes.setdefault(k, {}).setdefault(json.dumps(v, sort_keys=True), v)
  return {k: list(vals.values()) for k, vals in axes.items()}


def _row(point: Point, r: Mapping[str, Any], reused: bool) -> dict[str, Any]:
  u, rt = r.get("unlearned", {}), r.get("retrained", {})
  mean = lambda d, k: float(d.get(k, {}).get("mean", float("nan")))
  mia = (r.get("mia") or {}).get("unlearned")
  return {"point": point.name, "values": {k: jsonable(v) for k, v in point.values},
          "final_score": float(r["final_score"]), "forgetting_quality": float(r["forgetting_quality"]),
          "retain_acc_U": mean(u, "retain_accuracy"), "test_acc_U": mean(u, "test_accuracy"),
          "forget_acc_U": mean(u, "forget_accuracy"), "mia_U": float("nan") if mia is None else float(mia),
          "cost_rel": float((r.get("cost") or {}).get("relative_to_retrain", float("nan"))),
          "retain_acc_R": mean(rt, "retain_accuracy"), "test_acc_R": mean(rt, "test_accuracy"),
          "N": r.get("num_models_scored"), "reused": reused, "flag": report.degenerate_flag(r.get("degenerate")),
          **diagnostics.table_cells(r)}


def rank_rows(rows: list[dict[str, Any]]) -> None:
  """Sorts ``rows`` by final score (best first; NaN last, ties keep grid order) and numbers them."""
  rows.sort(key=lambda row: -row["final_score"] if math.isfinite(row["final_score"]) else math.inf)
  for i, row in enumerate(rows):
    row["rank"] = i + 1


# ------------------------------------------------------------------ outputs


def table_columns(result: SweepResult) -> list[str]:
  diag = [c for c in dict.fromkeys(k for row in result.rows for k in row) if c.startswith("diag:")]
  cols = ["rank", "point", *result.grid, *METRIC_COLUMNS, "flag", *diag]
  if result.confirm is not None:
    cols[cols.index("forgetting_quality") + 1:cols.index("forgetting_quality") + 1] = ["confirm_final_score",
                                                                                        "confirm_forgetting_quality"]
  return cols


def _cells(result: SweepResult, exact: bool = False) -> list[dict[str, Any]]:
  """Table cells per row; grid values as short text (``exact``: full precision, for CSV)."""
  out = []
  for row in result.rows:
    text = (lambda v: v if isinstance(v, str) else json.dumps(v)) if exact else report.value_text
    cell = {**row, **{k: text(row["values"][k]) for k in result.grid}}
    for k in ("confirm_final_score", "confirm_forgetting_quality", *table_columns(result)):
      cell.setdefault(k, "")
    out.append(cell)
  return out


def sweep_markdown(result: SweepResult) -> str:
  """The ranked table with a heading naming the setup, and the best point (and its confirmation)."""
  best = result.best
  lines = [f"## sweep of {result.method}: {result.reference['setup']}", "",
           f"retrained reference: retain {result.reference['retain_acc_R']:.4f}, test "
           f"{result.reference['test_acc_R']:.4f} (seed {result.reference['seed']}, shared by every point)", "",
           report.markdown_table(table_columns(result), _cells(result)).rstrip("\n"), "",
           f"best point: {best['point']} (final score {best['final_score']:.4f}, forgetting quality "
           f"{best['forgetting_quality']:.4f}; selected among {len(result.rows)} points, so optimistic)"
           + (f"; flagged {best['flag']}: its F does not measure forgetting" if best.get("flag") else "")]
  c = result.confirm
  if c is not None:
    lines.append(f"confirmation on a fresh unlearning seed stream (unlearn seed {c['unlearn_seed']}, same original "
                 f"and retrained models): final score {c['final_score']:.4f}, forgetting quality "
                 f"{c['forgetting_quality']:.4f}")
  return "\n".join(lines) + "\n"


def sweep_csv(result: SweepResult) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  cols = table_columns(result)
  w.writerow(cols)
  for cell in _cells(result, exact=True):
    w.writerow([cell[c] for c in cols])
  return buf.getvalue()


def write_outputs(result: SweepResult, out_dir: str, plots: bool = True) -> dict[str, str]:
  """Writes ``sweep.md``, ``sweep.csv``, ``sweep.json`` (and ``sweep.png``) atomically; returns their paths."""
  paths = {"markdown": os.path.join(out_dir, TABLE_FILE), "csv": os.path.join(out_dir, CSV_FILE),
           "json": os.path.join(out_dir, JSON_FILE)}
  checkpoint.atomic_write_text(paths["markdown"], sweep_markdown(result))
  checkpoint.atomic_write_text(paths["csv"], sweep_csv(result))
  summary = {"method": result.method, "grid": result.grid, "rows": result.rows, "best": result.best["point"],
             "confirm": result.confirm, "reference": result.reference}
  checkpoint.atomic_write_text(paths["json"], json.dumps(summary, indent=1, allow_nan=True) + "\n")
  if plots:
    paths["plot"] = write_plot(result, os.path.join(out_dir, PLOT_FILE))
  return paths


def _numeric(values: Sequence[Any]) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


# One colour per quantity in every panel; the groups of points (the other hyperparameters' values)
# differ by marker and line style, never by colour.
PLOT_COLORS = {"F": "C0", "final": "C1", "retain": "C2", "test": "C3"}
GROUP_STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", "-"), ("v", "--"), ("P", "-."), ("X", "-"), ("*", "--")]
REFERENCE_STYLE = ":"  # the retrained models' accuracies; no group uses it


def write_plot(result: SweepResult, path: str) -> str:
  """One column per swept hyperparameter: F and final score (top), retain/test accuracy (bottom).

  Colours name the quantity and are the same in every panel (F, final score, retain and
  test accuracy; a dotted line of the quantity's colour marks the retrained models'
  accuracy). Points that share the other hyperparameters' values are joined by a line,
  one marker and line style per such group (in grid order), named in a legend below the
  column; the quantities' legend sits below the panels, so no legend covers data. Numeric axes
  spanning more than a factor 10 of positive values are logarithmic; others categorical.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  from matplotlib.lines import Line2D

  keys = list(result.grid)
  fig, axes = plt.subplots(2, len(keys), figsize=(4.5 * len(keys), 6.5), squeeze=False, layout="constrained")
  for j, key in enumerate(keys):
    values = result.grid[key]
    numeric = _numeric(values)
    order = [json.dumps(x) for x in values]
    pos = (lambda v: v) if numeric else (lambda v: order.index(json.dumps(v)))
    others = [k for k in keys if k != key]
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
      label = ", ".join(f"{k}={report.value_text(row['values'][k])}" for k in others)
      lines.setdefault(label, []).append(row)
    top, bottom = axes[0][j], axes[1][j]
    group_handles = []
    in_grid = lambda rows: tuple([json.dumps(x) for x in result.grid[k]].index(json.dumps(rows[0]["values"][k]))
                                 for k in others)
    for n, (label, rows) in enumerate(sorted(lines.items(), key=lambda item: in_grid(item[1]))):  # grid order
      rows = sorted(rows, key=lambda r: pos(r["values"][key]))
      xs = [pos(r["values"][key]) for r in rows]
      marker, style = GROUP_STYLES[n % len(GROUP_STYLES)]
      for ax, quantity, field in ((top, "F", "forgetting_quality"), (top, "final", "final_score"),
                                  (bottom, "retain", "retain_acc_U"), (bottom, "test", "test_acc_U")):
        ax.plot(xs, [r[field] for r in rows], marker=marker, ls=style, color=PLOT_COLORS[quantity], ms=5)
      if label:
        group_handles.append(Line2D([], [], color="k", marker=marker, ls=style, ms=5, label=label))
    bottom.axhline(result.reference["retain_acc_R"], color=PLOT_COLORS["retain"], ls=REFERENCE_STYLE, lw=1.3)
    bottom.axhline(result.reference["test_acc_R"], color=PLOT_COLORS["test"], ls=REFERENCE_STYLE, lw=1.3)
    if numeric:
      positive = [float(v) for v in values if float(v) > 0]
      if len(positive) == len(values) and max(positive) / min(positive) >= 10:
        for ax in (top, bottom):
          ax.set_xscale("log")
          ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
          ax.set_xticks(sorted(values), [f"{v:g}" for v in sorted(values)])
      elif all(isinstance(v, int) for v in values):
        for ax in (top, bottom):
          ax.set_xticks(sorted(values))
    else:
      for ax in (top, bottom):
        ax.set_xticks(range(len(values)), [str(v) for v in values])
    top.set_ylabel("forgetting quality F / final score")
    bottom.set_ylabel("accuracy (unlearned, mean)")
    bottom.set_xlabel(key)
    if group_handles:
      shown = group_handles[:12]
      if len(group_handles) > 12:
        shown.append(Line2D([], [], ls="none", label=f"... {len(group_handles) - 12} more"))
      bottom.legend(handles=shown, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, frameon=False,
                    ncol=1 if len(shown) <= 4 else 2, title=f"points sharing {', '.join(others)}",
                    title_fontsize=7)
  quantities = [Line2D([], [], color=PLOT_COLORS["F"], marker="o", label="forgetting quality F"),
                Line2D([], [], color=PLOT_COLORS["final"], marker="o", label="final score"),
                Line2D([], [], color=PLOT_COLORS["retain"], marker="o", label="retain accuracy"),
                Line2D([], [], color=PLOT_COLORS["test"], marker="o", label="test accuracy"),
                Line2D([], [], color="gray", ls=REFERENCE_STYLE, lw=1.3, label="retrained models (dotted, same colour)")]
  fig.legend(handles=quantities, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
  fig.suptitle(f"sweep of {result.method}: {result.reference['setup']}", fontsize=10)
  report.save_figure(fig, path)
  return path
