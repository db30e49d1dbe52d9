"""A given original model (``evaluate --original PATH``) as our model's ``(params, batch_stats)``.

Two formats:

* a PyTorch ``.pth`` / ``.pt`` holding a torchvision ResNet-18 ``state_dict`` (the
  competition's ``original_model.pth``), read **without PyTorch** by
  :func:`unlearn_jax.interop.pth.read_state_dict` (tensors and ordered dicts only) and
  converted by :func:`unlearn_jax.interop.torch_import.import_torchvision_resnet18`
  (model ``resnet18`` or ``resnet18_cifar``);
* an ``.npz`` this project saved for an original model: the ``model.npz`` entry of an
  ``original-<key>`` cache folder (``params/...``, ``batch_stats/...`` arrays with a
  checksummed manifest), for any model.

Either way the arrays are checked name by name and shape by shape against the model
the run builds, and the file's SHA-256 is returned so that every cache entry derived
from the given original is keyed by the file's contents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import jax
import numpy as np

PTH_SUFFIXES = (".pth", ".pt")
NPZ_SUFFIXES = (".npz",)
TORCH_MODELS = {"resnet18": False, "resnet18_cifar": True}  # model -> cifar_stem


@dataclasses.dataclass(frozen=True)
class GivenOriginal:
  """Where a given original came from: the path as given, its format and its SHA-256."""

  path: str
  format: str
  sha256: str

  def record(self) -> dict[str, str]:
    return dataclasses.asdict(self)


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def describe(path: str) -> GivenOriginal:
  """The format and SHA-256 of ``path``; a one-line ``ValueError`` if it cannot be a given original."""
  if not os.path.isfile(path):
    raise ValueError(f"--original {path!r} does not exist or is not a regular file")
  lower = path.lower()
  if lower.endswith(PTH_SUFFIXES):
    fmt = "torchvision-pth"
  elif lower.endswith(NPZ_SUFFIXES):
    fmt = "unlearn-jax-npz"
  else:
    raise ValueError(f"--original {path!r}: expected a .pth/.pt torchvision state_dict or a .npz original "
                     f"saved by unlearn-jax")
  try:
    sha = file_sha256(path)
  except OSError as err:
    raise ValueError(f"--original {path!r} cannot be read: {err.strerror or err}") from None
  return GivenOriginal(path, fmt, sha)


def _flat(tree, prefix=()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def check_against(params: dict, batch_stats: dict, expected: Any, path: str) -> None:
  """Raises ``ValueError`` naming the first missing, unexpected or mis-shaped entry."""
  for kind, got in (("params", params), ("batch_stats", batch_stats)):
    want = {k: tuple(v.shape) for k, v in _flat(dict(expected.get(kind, {}))).items()}
    have = {k: tuple(np.shape(v)) for k, v in _flat(got).items()}
    missing = sorted("/".join(k) for k in set(want) - set(have))
    extra = sorted("/".join(k) for k in set(have) - set(want))
    if missing:
      raise ValueError(f"--original {path!r} lacks {kind} {missing[:3]}{' ...' if len(missing) > 3 else ''} "
                       f"of the model")
    if extra:
      raise ValueError(f"--original {path!r} has {kind} {extra[:3]}{' ...' if len(extra) > 3 else ''} "
                       f"the model does not have")
    for k, shape in want.items():
      if have[k] != shape:
        raise ValueError(f"--original {path!r}: {kind} {'/'.join(k)} has shape {have[k]}, the model expects {shape}")


def load(given: GivenOriginal, model_name: str, model, num_classes: int, image_shape: tuple[int, ...]
         ) -> tuple[dict, dict]:
  """``(params, batch_stats)`` of the given original, float32, checked against ``model``."""
  from unlearn_jax import checkpoint
  path = given.path
  if given.format == "torchvision-pth":
    from unlearn_jax.interop import pth, torch_import
    if model_name not in TORCH_MODELS:
      raise ValueError(f"--original {path!r} is a torchvision ResNet-18 state_dict; it needs --model resnet18 "
                       f"(or resnet18_cifar), got {model_name!r}")
    try:
      sd = pth.read_state_dict(path)
    except OSError as err:
      raise ValueError(f"--original {path!r} cannot be read: {err.strerror or err}") from None
    if "fc.weight" in sd and sd["fc.weight"].shape[0] != num_classes:
      raise ValueError(f"--original {path!r} has {sd['fc.weight'].shape[0]} output classes; the dataset has "
                       f"{num_classes}")
    try:
      params, batch_stats = torch_import.import_torchvision_resnet18(sd, num_classes,
                                                                     cifar_stem=TORCH_MODELS[model_name])
    except ValueError as err:
      raise ValueError(f"--original {path!r}: {err}") from None
  else:
    try:
      arrays, _ = checkpoint.load_arrays(path)
    except checkpoint.CorruptEntry as err:
      raise ValueError(f"--original {path!r} is not a readable unlearn-jax original ({err})") from None
    params = checkpoint.unflatten_tree(arrays, "params/")
    batch_stats = checkpoint.unflatten_tree(arrays, "batch_stats/")
    if not params:
      raise ValueError(f"--original {path!r} holds no params/ arrays; expected the model.npz of an original-<key> "
                       f"cache folder")
  from unlearn_jax.training.state import init_variables
  want_params, want_stats = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), image_shape))
  check_against(params, batch_stats, {"params": want_params, "batch_stats": want_stats}, path)
  cast = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float32), tree)
  return cast(params), cast(batch_stats)


def measured_arrays(given: GivenOriginal, model_name: str, model, data, measure) -> dict[str, np.ndarray]:
  """The cache entry of a given original: its ``params/``, ``batch_stats/`` and the ``out/``
  measurements ``measure(params, batch_stats, data)`` (as a trained original's entry, without
  ``kept_epoch``)."""
  from unlearn_jax import checkpoint
  params, batch_stats = load(given, model_name, model, int(data.num_classes), tuple(data.images.shape[1:]))
  out = jax.jit(measure)(params, batch_stats, data)
  return checkpoint.flatten_tree(dict(params=params, batch_stats=batch_stats, out=out))
