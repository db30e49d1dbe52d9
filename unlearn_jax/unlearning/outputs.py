"""What a method's ``unlearn`` must return, checked while its program is traced.

``unlearn(original, data, key)`` returns an :class:`~unlearn_jax.unlearning.UnlearnResult`
whose ``state`` is a :class:`~unlearn_jax.unlearning.ModelState` with exactly the
original's tree: the same parameter and BatchNorm-statistics leaves, each of the same
shape and dtype (a method that casts to float16, or hands back integer parameters,
changes what is measured without failing). Structure, shapes and dtypes are static in
JAX, so :func:`check_result` runs while the per-seed program is traced, before any seed
is computed; a mismatch is a one-line :class:`ValueError` naming the first bad leaf.
Finiteness is a property of the values and is checked on the measured outputs (see
:func:`unlearn_jax.protocol.scoring.nonfinite_seeds`).

``metrics`` holds the method's own diagnostics (e.g. a loss per epoch, a fraction of
parameters changed): :func:`diagnostics` checks that they are a mapping of numeric
arrays, which the protocol keeps per seed (see :mod:`unlearn_jax.results.diagnostics`).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.unlearning.base import ModelState, UnlearnResult


def _path_text(prefix: str, path) -> str:
  parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
  return "/".join([prefix, *parts])


def _leaves(prefix: str, tree: Any) -> dict[str, Any]:
  return {_path_text(prefix, p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], Any]:
  return tuple(np.shape(leaf)), jnp.result_type(leaf)


def check_result(method_name: str, original: ModelState, result: Any) -> None:
  """Raises a one-line ``ValueError`` unless ``result`` is an ``UnlearnResult`` whose state has
  ``original``'s structure, shapes and dtypes (the message names the first bad leaf)."""
  who = f"method {method_name!r}"
  if not isinstance(result, UnlearnResult):
    raise ValueError(f"{who}: unlearn returned a {type(result).__name__}, not an UnlearnResult(state, metrics)")
  state = result.state
  if not isinstance(state, ModelState):
    raise ValueError(f"{who}: unlearn returned a state of type {type(state).__name__}, not a "
                     f"ModelState(params, batch_stats)")
  for part in ("params", "batch_stats"):
    want, got = _leaves(part, getattr(original, part)), _leaves(part, getattr(state, part))
    for name in want:
      if name not in got:
        raise ValueError(f"{who}: the unlearned model lacks the original's leaf {name}")
    for name in got:
      if name not in want:
        raise ValueError(f"{who}: the unlearned model has leaf {name}, which the original has not")
    for name, leaf in want.items():
      (ws, wd), (gs, gd) = _shape_dtype(leaf), _shape_dtype(got[name])
      if ws != gs:
        raise ValueError(f"{who}: the unlearned model's leaf {name} has shape {gs}, the original's {ws}")
      if wd != gd:
        raise ValueError(f"{who}: the unlearned model's leaf {name} has dtype {gd}, the original's {wd}")


def diagnostics(method_name: str, result: UnlearnResult) -> dict[str, Any]:
  """``result.metrics`` as a plain dict of numeric arrays (``{}`` for ``None``); one-line error otherwise."""
  metrics = result.metrics
  if metrics is None:
    return {}
  if not isinstance(metrics, Mapping):
    raise ValueError(f"method {method_name!r}: UnlearnResult.metrics must be a mapping of names to arrays, "
                     f"got a {type(metrics).__name__}")
  out: dict[str, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(dict(metrics))[0]:
    name = _path_text("", path).lstrip("/")
    try:
      dtype = jnp.result_type(leaf)
    except TypeError:
      dtype = None
    if dtype is None or not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
      raise ValueError(f"method {method_name!r}: diagnostic {name!r} in UnlearnResult.metrics is not a numeric "
                       f"array (got {type(leaf).__name__})")
    out[name] = jnp.asarray(leaf)
  return out
