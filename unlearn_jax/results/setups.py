"""Which results may be compared: the *setup* of an evaluation.

Two results are comparable when they scored their methods against the same
reference: the same data (source and contents), forget/validation split, model,
training recipe, compute dtype and number of models N. Every command that reads
several results (``leaderboard``, ``compare``, ``stability``, ``sweep``) goes
through this module, so "same setup" means one thing everywhere.

``results.json`` written since the ``setup`` field existed carries it directly
(:func:`setup_of` returns it); older files are described from their other fields.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

SETUP_FIELDS = ("dataset", "data", "model", "recipe", "split", "dtype", "num_models")


def make_setup(*, dataset: str, data_fingerprint: str, model: str, recipe: Mapping[str, Any],
               split: Mapping[str, Any], dtype: str, num_models: int) -> dict[str, Any]:
  """The setup record stored in ``results.json`` under ``"setup"`` (JSON values only)."""
  return {"dataset": dataset, "data": data_fingerprint, "model": model, "recipe": dict(recipe),
          "split": dict(split), "dtype": dtype, "num_models": int(num_models)}


def setup_of(results: Mapping[str, Any]) -> dict[str, Any]:
  """The setup of one results dict (the recorded one, or one derived from older fields)."""
  recorded = results.get("setup")
  if isinstance(recorded, Mapping):
    return {k: recorded.get(k) for k in SETUP_FIELDS}
  return {"dataset": results.get("dataset"), "data": None, "model": results.get("model"),
          "recipe": results.get("recipe"), "split": results.get("split"), "dtype": results.get("dtype", "float32"),
          "num_models": results.get("num_models_scored", results.get("num_models"))}


def setup_key(results: Mapping[str, Any]) -> str:
  """A canonical string of the setup: equal strings, comparable results."""
  return json.dumps(setup_of(results), sort_keys=True, default=repr)


def describe(setup: Mapping[str, Any]) -> str:
  """A short human description, e.g. ``digits / mlp / recipe digits / random 0.1 / N=128``."""
  recipe = setup.get("recipe") or {}
  split = setup.get("split") or {}
  name = recipe.get("name", "?") if isinstance(recipe, Mapping) else recipe
  changed = recipe_changes(recipe) if isinstance(recipe, Mapping) else {}
  if changed:  # e.g. the tiny config's shorter digits recipe: named by what it changes
    name = f"{name} ({', '.join(f'{k}={_short_value(v)}' for k, v in changed.items())})"
  forget = split.get("forget", "?") if isinstance(split, Mapping) else split
  text = f"{setup.get('dataset')} / {setup.get('model')} / recipe {name} / forget {forget} / N={setup.get('num_models')}"
  if setup.get("dtype") not in (None, "float32"):
    text += f" / {setup['dtype']}"
  from unlearn_jax.results.untrusted import terminal_text  # fields read from results files: no control characters
  return terminal_text(text)


def _plain(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def _short_value(value: Any) -> str:
  return f"{value:g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) else value


def recipe_changes(recipe: Mapping[str, Any]) -> dict[str, Any]:
  """The fields of a recorded recipe that differ from the registered recipe of its name (``{}``
  when it is the registered one, the name is not registered here, or the record lacks fields)."""
  import dataclasses
  from unlearn_jax.training import RECIPES
  name = recipe.get("name")
  if not isinstance(name, str) or name not in RECIPES:
    return {}
  reference = _plain(dataclasses.asdict(RECIPES[name]()))
  if any(k not in recipe for k in reference):  # a partial record (older results): nothing to compare with
    return {}
  return {k: v for k, v in recipe.items() if k != "name" and k in reference
          and json.dumps(_plain(v), sort_keys=True) != json.dumps(reference[k], sort_keys=True)}


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
  """The setup fields on which results ``a`` and ``b`` differ (empty when comparable)."""
  sa, sb = setup_of(a), setup_of(b)
  return [k for k in SETUP_FIELDS if json.dumps(sa[k], sort_keys=True, default=repr)
          != json.dumps(sb[k], sort_keys=True, default=repr)]


def require_same_setup(results: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
  """Raises a one-line ``ValueError`` naming the first result whose setup differs from the first one's."""
  for r, name in zip(results[1:], names[1:]):
    diff = differences(results[0], r)
    if diff:
      fields = ", ".join(f"{k} ({_short(setup_of(results[0])[k])} vs {_short(setup_of(r)[k])})" for k in diff)
      raise ValueError(f"{name} was evaluated on a different setup than {names[0]}: {fields}")


def group_by_setup(results: Sequence[Mapping[str, Any]]) -> list[list[int]]:
  """Indices of ``results`` grouped by setup, groups in order of first appearance."""
  groups: dict[str, list[int]] = {}
  for i, r in enumerate(results):
    groups.setdefault(setup_key(r), []).append(i)
  return list(groups.values())


def _short(value: Any, limit: int = 40) -> str:
  text = json.dumps(value, sort_keys=True, default=repr) if not isinstance(value, str) else value
  return text if len(text) <= limit else text[:limit - 3] + "..."
