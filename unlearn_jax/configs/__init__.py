"""Configs for ``unlearn-jax evaluate``: ``get_config()`` modules and files, plus ``--set`` overrides.

A config is a plain dict whose keys are :func:`unlearn_jax.configs.default.get_config`'s.
``load_config(spec)`` accepts a module name in this package (``tiny``), a path
to a Python file defining ``get_config()``, or a ``.json`` / ``.yaml`` file of
overrides applied to the default. ``apply_overrides(config, ["a=1",
"hp.lr=0.01"])`` sets (dotted) keys, parsing values as JSON/YAML scalars.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
from typing import Any, Iterable, Mapping

from unlearn_jax.configs import default


def _check_keys(overrides: Mapping[str, Any], base: Mapping[str, Any], where: str) -> None:
  unknown = sorted(set(overrides) - set(base))
  if unknown:
    raise ValueError(f"unknown config key(s) {unknown} in {where}; expected keys of configs/default.py")


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "overrides") -> dict[str, Any]:
  """A copy of ``base`` with ``overrides`` applied (dict values merged one level deep)."""
  _check_keys(overrides, base, where)
  out = copy.deepcopy(dict(base))
  for k, v in overrides.items():
    if isinstance(out.get(k), dict) and isinstance(v, Mapping):
      out[k] = {**out[k], **copy.deepcopy(dict(v))}
    else:
      out[k] = copy.deepcopy(v)
  return out


def load_config(spec: str | None) -> dict[str, Any]:
  """The config named by ``spec`` (``None``: the default)."""
  if spec is None:
    return default.get_config()
  if os.path.sep not in spec and not os.path.splitext(spec)[1]:
    try:
      module = importlib.import_module(f"unlearn_jax.configs.{spec}")
    except ModuleNotFoundError:
      raise ValueError(f"unknown config {spec!r}: not a module of unlearn_jax/configs nor a file") from None
    return module.get_config()
  if not os.path.isfile(spec):
    raise ValueError(f"config file {spec!r} does not exist")
  ext = os.path.splitext(spec)[1].lower()
  try:
    if ext == ".py":
      mod_spec = importlib.util.spec_from_file_location("_unlearn_jax_user_config", spec)
      module = importlib.util.module_from_spec(mod_spec)
      mod_spec.loader.exec_module(module)
      if not hasattr(module, "get_config"):
        raise ValueError(f"config file {spec!r} defines no get_config()")
      return merge(default.get_config(), module.get_config(), spec)
    with open(spec) as f:
      text = f.read()
  except OSError as err:
    raise ValueError(f"cannot read config file {spec!r}: {err}") from None
  if ext == ".json":
    try:
      data = json.loads(text)
    except json.JSONDecodeError as err:
      raise ValueError(f"config file {spec!r} is not valid JSON: {err}") from None
  elif ext in (".yaml", ".yml"):
    import yaml
    try:
      data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
      raise ValueError(f"config file {spec!r} is not valid YAML: {' '.join(str(err).split())}") from None
  else:
    raise ValueError(f"config file {spec!r} must end in .py, .json, .yaml or .yml")
  if not isinstance(data, Mapping):
    raise ValueError(f"config file {spec!r} must hold a mapping of config keys")
  return merge(default.get_config(), data, spec)


def parse_value(text: str) -> Any:
  """``"0.01"`` -> 0.01, ``"1e-4"`` -> 0.0001, ``"true"`` -> True, ``"null"`` -> None, ``"[1,2]"`` -> [1, 2],
  else the string. (YAML 1.1 reads ``1e-4`` without a dot as a string; it is a float here.)"""
  import yaml
  try:
    value = yaml.safe_load(text)
  except yaml.YAMLError:
    return text
  if isinstance(value, str):
    try:
      return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity", "+inf") else value
    except ValueError:
      return value
  return value


def apply_overrides(config: Mapping[str, Any], assignments: Iterable[str], where: str = "--set") -> dict[str, Any]:
  """Applies ``key=value`` / ``key.sub=value`` assignments to a copy of ``config``."""
  out = copy.deepcopy(dict(config))
  for item in assignments:
    if "=" not in item:
      raise ValueError(f"{where} expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] not in out:
      raise ValueError(f"unknown config key {parts[0]!r} in {where} {item!r}; expected one of {sorted(out)}")
    node = out
    for p in parts[:-1]:
      if node.get(p) is None:
        node[p] = {}
      if not isinstance(node[p], dict):
        raise ValueError(f"config key {p!r} is not a mapping, cannot set {key!r}")
      node = node[p]
    node[parts[-1]] = parse_value(text)
  return out
