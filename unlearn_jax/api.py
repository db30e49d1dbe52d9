"""The whole protocol from Python in one call: :func:`evaluate`.

::

  import unlearn_jax
  results = unlearn_jax.evaluate(dataset="digits", method="finetune", num_models=32, hp={"lr": 0.01})
  print(results["forgetting_quality"], results["final_score"])

It is the library form of ``unlearn-jax evaluate``: the same config (``config``:
``tiny``, a ``.py``/``.json``/``.yaml`` file, or the default), the same keys as
keyword options, the same model cache (``cache_dir``, default ``./unlearn_cache``)
and the same ``results.json`` fields, returned as a dict.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any, Mapping, Optional

_NOT_OPTIONS = ("method", "hp", "dataset", "num_models", "output_dir", "plots")


def evaluate(dataset: str = "digits", method: Any = "finetune", num_models: Optional[int] = None, *,
             hp: Optional[Mapping[str, Any]] = None, config: Optional[str] = None, output_dir: Optional[str] = None,
             plots: bool = False, verbose: bool = True, **options: Any) -> dict[str, Any]:
  """Scores ``method`` on ``dataset``: N unlearned vs N retrained models; returns the results dict.

  Args:
    dataset: a data source (``digits``, ``cifar10``, ``tfds:<name>``, ...).
    method: a registry name, ``path/to/file.py:make`` / ``module:make``, a factory
      ``make(model, **hp) -> UnlearningMethod``, or a built ``UnlearningMethod``.
    num_models: N (default: the config's, 512 in the default config).
    hp: hyperparameter overrides, checked against the method's declarations before
      anything is trained.
    config: a config name (e.g. ``tiny``) or file, as ``--config``; default: ``configs/default.py``.
    output_dir: where ``results.json`` (and the plots, with ``plots=True``) and the
      resumable unlearning chunks go; ``None``: nothing is written except the model cache.
    verbose: progress lines on stderr.
    **options: any other config key, merged into the config's (a mapping such as
      ``recipe_overrides`` updates the config's entries) (``model``, ``recipe``, ``recipe_overrides``, ``seed``,
      ``cache_dir``, ``forget_mode``, ``forget_fraction``, ``strategy``, ``chunk_size``,
      ``dtype``, ``allow_nan_drop``, ``original``, ...; see ``unlearn_jax/configs/default.py``).

  Returns:
    The ``results.json`` dict: ``forgetting_quality``, ``final_score``, per-example
    epsilons, accuracies of both populations, cost, the setup, and provenance.

  Raises:
    ValueError: a bad argument (one-line message), including
      :class:`unlearn_jax.pipeline.ProtocolError` when the method diverges.
  """
  from unlearn_jax import configs, pipeline, report
  from unlearn_jax.commands.evaluate import to_eval_config

  cfg = configs.load_config(config)
  unknown = sorted(set(options) - set(cfg))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown}; expected config keys "
                     f"{sorted(set(cfg) - set(_NOT_OPTIONS))}")
  cfg = configs.merge(cfg, dict(options, dataset=dataset), "options")  # mappings merge into the config's
  if num_models is not None:
    cfg["num_models"] = num_models
  if hp:
    cfg["hp"] = dict(cfg.get("hp") or {}, **dict(hp))
  named = isinstance(method, str)
  cfg["method"] = method if named else "<object>"  # method_defaults are looked up by name
  configs.check_types(cfg, "unlearn_jax.evaluate")
  with tempfile.TemporaryDirectory(prefix="unlearn_jax_chunks_") as scratch:
    cfg["output_dir"] = output_dir if output_dir is not None else scratch
    eval_config = to_eval_config(cfg)
    if not named:
      eval_config = dataclasses.replace(eval_config, method=method)
    results = pipeline.evaluate(eval_config, pipeline.Progress(enabled=verbose))
    if output_dir is not None:
      report.write_results(results, output_dir)
      if plots:
        report.write_plots(results, output_dir)
  return {k: v for k, v in results.items() if k != "_arrays"}
