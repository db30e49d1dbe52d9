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

import yaml

from unlearn_jax._validate import parse_value  # re-exported: configs.parse_value
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
  """The config named by ``spec`` (``None``: the default), its value types checked (:func:`check_types`)."""
  if spec is None:
    return default.get_config()
  if os.path.sep not in spec and not os.path.splitext(spec)[1]:
    if not spec.isidentifier() or spec.startswith("_"):
      raise ValueError(f"unknown config {spec!r}: not a module of unlearn_jax/configs nor a file")
    try:
      module = importlib.import_module(f"unlearn_jax.configs.{spec}")
    except ModuleNotFoundError:
      raise ValueError(f"unknown config {spec!r}: not a module of unlearn_jax/configs nor a file") from None
    if not callable(getattr(module, "get_config", None)):
      raise ValueError(f"unknown config {spec!r}: unlearn_jax/configs/{spec}.py defines no get_config()")
    return check_types(module.get_config(), f"config {spec!r}")
  if not os.path.isfile(spec):
    raise ValueError(f"config file {spec!r} does not exist")
  ext = os.path.splitext(spec)[1].lower()
  if ext == ".py":
    return check_types(merge(default.get_config(), _run_config_file(spec), spec), f"config file {spec!r}")
  try:
    with open(spec, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as err:
    raise ValueError(f"cannot read config file {spec!r}: {err}") from None
  if ext == ".json":
    try:
      data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
      raise ValueError(f"config file {spec!r} is not valid JSON: {err}") from None
  elif ext in (".yaml", ".yml"):
    try:
      data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
      raise ValueError(f"config file {spec!r} is not valid YAML: {' '.join(str(err).split())}") from None
  else:
    raise ValueError(f"config file {spec!r} must end in .py, .json, .yaml or .yml")
  if not isinstance(data, Mapping):
    raise ValueError(f"config file {spec!r} must hold a mapping of config keys")
  return check_types(merge(default.get_config(), data, spec), f"config file {spec!r}")


def _run_config_file(spec: str) -> Mapping[str, Any]:
  """``get_config()`` of the Python file ``spec``; any failure of the user's code is one line."""
  try:
    mod_spec = importlib.util.spec_from_file_location("_unlearn_jax_user_config", spec)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
  except OSError as err:
    raise ValueError(f"cannot read config file {spec!r}: {err}") from None
  except (SystemExit, KeyboardInterrupt) as err:  # exit() or an interrupt raised by the file's own code
    raise ValueError(f"config file {spec!r} {_exit_text(err)} while loading") from None
  except Exception as err:  # the user's module may raise anything, SyntaxError included
    raise ValueError(f"config file {spec!r} failed to load: {type(err).__name__}: {_one_line(err)}") from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ValueError(f"config file {spec!r} defines no get_config()")
  try:
    config = get_config()
  except (SystemExit, KeyboardInterrupt) as err:
    raise ValueError(f"get_config() of config file {spec!r} {_exit_text(err)}") from None
  except Exception as err:  # likewise for the user's get_config()
    raise ValueError(f"get_config() of config file {spec!r} raised {type(err).__name__}: {_one_line(err)}") from None
  if not isinstance(config, Mapping):
    raise ValueError(f"get_config() of config file {spec!r} must return a dict of config keys, "
                     f"got {type(config).__name__}")
  return config


def _exit_text(err: BaseException) -> str:
  """``called sys.exit(3)`` / ``raised KeyboardInterrupt``: what a config's code did instead of returning."""
  if isinstance(err, SystemExit):
    code = err.code
    return f"called sys.exit({code!r})" if code is not None else "called sys.exit()"
  return f"raised {type(err).__name__}" + (f": {_one_line(err)}" if str(err) else "")


def _one_line(err: BaseException) -> str:
  return " ".join(str(err).split()) or "(no message)"


# key -> (accepted types, description); keys not listed (added by other features) are not checked here.
_NUMBER = (int, float)
KEY_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "dataset": ((str,), "a dataset name"),
    "data_dir": ((str, type(None)), "a folder path or null"),
    "model": ((str, type(None)), "a model name or null"),
    "recipe": ((str, type(None)), "a recipe name or null"),
    "recipe_overrides": ((Mapping,), "a mapping of recipe fields"),
    "forget_mode": ((str, type(None)), "a forget mode or null (the dataset's default)"),
    "original": ((str, type(None)), "a path to an original model or null"),
    "forget_fraction": (_NUMBER, "a number"),
    "forget_groups": ((int,), "an integer"),
    "forget_classes": ((list, tuple, type(None)), "a list of class ids or null"),
    "split_seed": ((int,), "an integer"),
    "method": ((str,), "a method name"),
    "hp": ((Mapping,), "a mapping of hyperparameters"),
    "method_defaults": ((Mapping,), "a mapping dataset -> method -> hyperparameters"),
    "num_models": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "strategy": ((str,), "a strategy name"),
    "chunk_size": ((int, type(None)), "an integer or null"),
    "conv_impl": ((str,), "a convolution lowering"),
    "dtype": ((str,), "a compute dtype"),
    "cache_dir": ((str,), "a folder path"),
    "output_dir": ((str,), "a folder path"),
    "cache_params": ((bool,), "true or false"),
    "compile_cache": ((bool,), "true or false"),
    "allow_nan_drop": ((bool,), "true or false"),
    "plots": ((bool,), "true or false"),
    "with_ceiling": ((bool,), "true or false"),
    "confirm": ((bool,), "true or false"),
    "bootstrap": ((int,), "an integer (draws; 0 for none)"),
    "margin_examples": ((int,), "an integer"),
    "metrics": ((str, list, tuple), "a comma-separated string or list of evaluation names"),
    "grid": ((Mapping, type(None)), "a mapping of hyperparameter names to lists of values"),
    "max_hours": (_NUMBER + (type(None),), "a number of hours or null"),
    "dataset_defaults": ((Mapping,), "a mapping dataset -> {model, recipe, forget_mode}"),
}


def check_types(config: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
  """Raises a one-line ``ValueError`` for a known key whose value has the wrong type; returns ``config``.

  Booleans are not integers here, and nested mappings (``method_defaults``,
  ``dataset_defaults``) are checked one level further down.
  """
  for key, (types, what) in KEY_TYPES.items():
    if key not in config:
      continue
    value = config[key]
    wrong_bool = isinstance(value, bool) and bool not in types
    if wrong_bool or not isinstance(value, types):
      raise ValueError(f"{where}: key {key!r} must be {what}, got {value!r}")
  for key in ("method_defaults", "dataset_defaults"):
    for name, entry in (config.get(key) or {}).items():
      if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: {key}.{name} must be a mapping, got {entry!r}")
      if key == "method_defaults":
        for method, hp in entry.items():
          if not isinstance(hp, Mapping):
            raise ValueError(f"{where}: method_defaults.{name}.{method} must be a mapping of hyperparameters, "
                             f"got {hp!r}")
  for key in ("recipe_overrides", "hp"):
    bad = [k for k in config.get(key) or {} if not isinstance(k, str)]
    if bad:
      raise ValueError(f"{where}: key {key!r} must map names to values, got key {bad[0]!r}")
  classes = config.get("forget_classes")
  if classes is not None and not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
    raise ValueError(f"{where}: key 'forget_classes' must be a list of integer class ids, got {classes!r}")
  return dict(config)


SETUP_FALLBACKS = {"model": "resnet18", "recipe": "competition", "forget_mode": "random"}


def setup_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
  """``model``, ``recipe`` and ``forget_mode`` of the config: the given value, else the dataset's
  ``dataset_defaults`` entry, else :data:`SETUP_FALLBACKS`; ``from_dataset`` names the keys that
  came from the dataset's defaults."""
  ds = (cfg.get("dataset_defaults") or {}).get(cfg["dataset"], {})
  out: dict[str, Any] = {"from_dataset": []}
  for key, fallback in SETUP_FALLBACKS.items():
    if cfg.get(key):
      out[key] = cfg[key]
    elif ds.get(key):
      out[key] = ds[key]
      out["from_dataset"].append(key)
    else:
      out[key] = fallback
  return out


def apply_overrides(config: Mapping[str, Any], assignments: Iterable[str], where: str = "--set") -> dict[str, Any]:
  """Applies ``key=value`` / ``key.sub=value`` assignments to a copy of ``config`` (types checked after each)."""
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
    check_types(out, f"{where} {item!r}")
  return out
