"""The whole protocol from Python in one call: :func:`evaluate`.

::

  import unlearn_jax
  results = unlearn_jax.evaluate(dataset="digits", method="finetune", num_models=32, hp={"lr": 0.01})
  print(results["forgetting_quality"], results["final_score"])

It is the library form of ``unlearn-jax evaluate``: the same config (``config``:
``tiny``, a ``.py``/``.json``/``.yaml`` file, or the default), the same keys as
keyword options (``metrics``, ``bootstrap``, ``with_ceiling`` included), the same
model cache (``cache_dir``, default ``./unlearn_cache``), the same evaluation
(:func:`unlearn_jax.protocol.run.evaluate`) and the same ``results.json`` record,
returned as a dict. With ``output_dir`` it writes what the command writes there
(``results.json``, ``populations.npz``, the plots with ``plots=True``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from unlearn_jax import configs
from unlearn_jax import distributed as dist
from unlearn_jax.protocol import config as protocol_config
from unlearn_jax.protocol import run as protocol_run
from unlearn_jax.results.progress import Progress

_NOT_OPTIONS = ("method", "hp", "dataset", "num_models", "output_dir", "plots")


def evaluate(dataset: str = "digits", method: Any = "finetune", num_models: Optional[int] = None, *,
             hp: Optional[Mapping[str, Any]] = None, config: Optional[str] = None, output_dir: Optional[str] = None,
             plots: bool = False, verbose: bool = True, distributed: Any = None,
             **options: Any) -> Optional[dict[str, Any]]:
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
    distributed: ``None`` (this process alone, unless the ``JAX_*`` variables say
      otherwise), ``"auto"`` (``--distributed auto``: :func:`jax.distributed.initialize`
      with no arguments, so every host of a Cloud TPU pod slice, SLURM or Open MPI job
      makes the same call), or a mapping of :func:`unlearn_jax.distributed.start`'s
      arguments (``distributed="auto"``, ``coordinator``, ``num_processes``,
      ``process_id``, ``timeout_s``). Several processes need a shared ``output_dir``
      and ``cache_dir``; process 0 returns the results, the others ``None``.
    **options: any other config key, merged into the config's (a mapping such as
      ``recipe_overrides`` updates the config's entries) (``model``, ``recipe``, ``recipe_overrides``, ``seed``,
      ``cache_dir``, ``forget_mode``, ``forget_fraction``, ``strategy``, ``chunk_size``,
      ``dtype``, ``allow_nan_drop``, ``original``, ...; see ``unlearn_jax/configs/default.py``).

  Returns:
    The ``results.json`` dict: ``forgetting_quality``, ``final_score``, per-example
    epsilons, accuracies of both populations, cost, the setup, and provenance.

  Raises:
    ValueError: a bad argument (one-line message), including
      :class:`unlearn_jax.protocol.run.ProtocolError` when the method diverges.
  """
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
  cfg["method"] = method  # a name, a plugin spec, a factory or a built method
  cfg["plots"] = bool(plots)
  configs.check_types({k: v for k, v in cfg.items() if k != "method"}, "unlearn_jax.evaluate")
  start = dict(distributed) if isinstance(distributed, Mapping) else {"distributed": distributed}
  unknown = sorted(set(start) - {"distributed", "coordinator", "num_processes", "process_id", "timeout_s"})
  if unknown:
    raise ValueError(f"unknown distributed key(s) {unknown}; expected distributed, coordinator, num_processes, "
                     f"process_id, timeout_s")
  spec = dist.resolve(**start)
  if spec.mode != "single" and output_dir is None:
    raise ValueError("a multi-process evaluate needs output_dir (a folder shared by all processes)")
  eval_config = protocol_config.from_dict(dict(cfg, output_dir=output_dir))  # checked before any process starts
  process_index, process_count = dist.initialize(spec)
  eval_config = dataclasses.replace(eval_config, process_index=process_index, process_count=process_count)
  evaluation = protocol_run.evaluate(eval_config, Progress(enabled=verbose))
  return None if evaluation is None else evaluation.record  # None: a process other than 0 of a multi-process run
