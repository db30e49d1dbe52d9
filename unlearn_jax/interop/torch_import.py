"""Import a torchvision ResNet-18 ``state_dict`` into our :class:`~unlearn_jax.models.resnet.ResNet18`.

Layout conversions (torch -> ours):

* conv weight ``(O, I, kh, kw)`` -> kernel ``(kh, kw, I, O)``;
* linear weight ``(O, I)`` -> kernel ``(I, O)``; biases unchanged;
* BatchNorm ``weight``/``bias`` -> params ``scale``/``bias``; ``running_mean``/
  ``running_var`` -> batch_stats ``mean``/``var``; ``num_batches_tracked`` dropped;
* module names: ``layer1.0.conv1`` -> ``layer1_0/conv1``, ``downsample.0`` ->
  ``downsample_conv``, ``downsample.1`` -> ``downsample_bn``.

The state dict may hold NumPy arrays or torch tensors; :func:`load_torch_state_dict`
reads a ``.pth`` file without PyTorch (:mod:`unlearn_jax.interop.pth`, tensors only). Our
model already matches torchvision's padding, pooling and BatchNorm semantics,
so imported weights give torchvision's eval-mode outputs.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from unlearn_jax.models import get_model

BN_PARAMS = {"weight": "scale", "bias": "bias"}
BN_STATS = {"running_mean": "mean", "running_var": "var"}


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
      value = value.float()
    value = value.numpy()
  return np.asarray(value)


def _module_path(torch_module: str) -> tuple[str, ...]:
  parts = torch_module.split(".")
  out: list[str] = []
  i = 0
  while i < len(parts):
    p = parts[i]
    if p.startswith("layer") and i + 1 < len(parts) and parts[i + 1].isdigit():
      out.append(f"{p}_{parts[i + 1]}")
      i += 2
    elif p == "downsample" and i + 1 < len(parts):
      out.append({"0": "downsample_conv", "1": "downsample_bn"}.get(parts[i + 1], f"downsample_{parts[i + 1]}"))
      i += 2
    else:
      out.append(p)
      i += 1
  return tuple(out)


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _flat(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def import_torchvision_resnet18(state_dict: Mapping[str, Any], num_classes: int | None = None,
                                cifar_stem: bool = False) -> tuple[dict, dict]:
  """Converts a torchvision ``resnet18`` ``state_dict`` to ``(params, batch_stats)``.

  Args:
    state_dict: name -> array (NumPy or torch tensor), as ``model.state_dict()`` gives.
    num_classes: expected classifier width (default: read from ``fc.weight``).
    cifar_stem: import into ``resnet18_cifar`` (3x3 stem) instead of ``resnet18``.

  Returns:
    ``(params, batch_stats)`` nested dicts of float32 NumPy arrays, checked
    name by name and shape by shape against our model.

  Raises:
    ValueError: on a missing, unexpected or mis-shaped entry (named in the message).
  """

  sd = {str(k).removeprefix("module."): _to_numpy(v) for k, v in state_dict.items()}
  if "fc.weight" not in sd:
    raise ValueError("state_dict has no 'fc.weight'; expected a torchvision resnet18 state_dict")
  num_classes = num_classes or int(sd["fc.weight"].shape[0])
  params: dict = {}
  batch_stats: dict = {}
  for name, value in sd.items():
    module, _, leaf = name.rpartition(".")
    path = _module_path(module)
    is_bn = path[-1].startswith("bn") or path[-1] == "downsample_bn"
    if leaf == "num_batches_tracked":
      continue
    if is_bn and leaf in BN_PARAMS:
      _set(params, path + (BN_PARAMS[leaf],), value.astype(np.float32))
    elif is_bn and leaf in BN_STATS:
      _set(batch_stats, path + (BN_STATS[leaf],), value.astype(np.float32))
    elif leaf == "weight" and value.ndim == 4:
      _set(params, path + ("kernel",), np.transpose(value, (2, 3, 1, 0)).astype(np.float32))
    elif leaf == "weight" and value.ndim == 2:
      _set(params, path + ("kernel",), value.T.astype(np.float32))
    elif leaf == "bias":
      _set(params, path + ("bias",), value.astype(np.float32))
    else:
      raise ValueError(f"unexpected state_dict entry {name!r} with shape {tuple(value.shape)}")

  model = get_model("resnet18_cifar" if cifar_stem else "resnet18", num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
  for kind, got in (("params", params), ("batch_stats", batch_stats)):
    want = {k: tuple(v.shape) for k, v in _flat(shapes[kind]).items()}
    have = {k: tuple(v.shape) for k, v in _flat(got).items()}
    missing = sorted("/".join(k) for k in set(want) - set(have))
    extra = sorted("/".join(k) for k in set(have) - set(want))
    if missing:
      raise ValueError(f"state_dict lacks {kind} {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
      raise ValueError(f"state_dict has unexpected {kind} {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for k, shape in want.items():
      if have[k] != shape:
        raise ValueError(f"{kind} {'/'.join(k)}: expected shape {shape}, got {have[k]} after conversion")
  return params, batch_stats


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a ``.pth`` / ``.pt`` state dict as NumPy arrays, without PyTorch (:func:`unlearn_jax.interop.pth.read_state_dict`:
  tensors and ordered dicts only; anything else is refused unrun)."""
  from unlearn_jax.interop import pth
  return pth.read_state_dict(path)
