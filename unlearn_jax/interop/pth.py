"""Read PyTorch ``.pth`` / ``.pt`` state dicts without PyTorch, refusing anything but tensors.

PyTorch (1.6 and later) saves ``torch.save(obj, f)`` as a zip archive with one top
folder ``<name>/`` holding ``data.pkl`` (a pickle of ``obj``), ``data/<key>`` (the raw
bytes of each tensor storage, little-endian unless ``byteorder`` says otherwise) and
``version``. In ``data.pkl`` a tensor is a call of
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
backward_hooks[, metadata])`` whose ``storage`` is a *persistent id*
``("storage", torch.FloatStorage, "<key>", "<device>", numel)``; a ``state_dict`` is a
``collections.OrderedDict`` of them (with a ``_metadata`` attribute of module versions).

:func:`read_state_dict` reads that format the way PyTorch's own ``weights_only=True``
loading does: the pickle may name only the globals in :data:`ALLOWED_GLOBALS`
(the ordered dict, the tensor rebuild functions, the typed storage classes); any
other global (``os.system``, ``builtins.eval``, a class with a ``__reduce__``
payload, ...) makes it stop with :class:`UnsafePickleError` at the point the name is
looked up, before anything it names is called. Memory stays bounded whatever the
file declares: every storage's declared size must equal its zip member's size and
the total stays under ``max_bytes`` before any byte is read, and every tensor view
(offset, sizes, strides) must lie inside its storage.

The result is a plain ``dict`` of NumPy arrays (``bfloat16`` widened to ``float32``),
ready for :func:`unlearn_jax.interop.torch_import.import_torchvision_resnet18`.
"""

from __future__ import annotations

import collections
import collections.abc
import io
import math
import pickle
import zipfile
from typing import Any

import numpy as np

# storage class name -> (NumPy dtype, bytes per element); bfloat16 has no NumPy dtype (read as uint16)
STORAGE_DTYPES: dict[str, tuple[str, int]] = {
    "DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
}
REBUILD_FUNCTIONS = ("_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter")
ALLOWED_GLOBALS = frozenset(
    [("collections", "OrderedDict")]
    + [("torch._utils", f) for f in REBUILD_FUNCTIONS]
    + [("torch", name) for name in STORAGE_DTYPES]
)
DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB of tensor data (a ResNet-18 state dict is ~45 MB)
MAX_PICKLE_BYTES = 64 << 20


class UnsafePickleError(ValueError):
  """The file's pickle names a global outside the allow-list (nothing it names was run)."""


class _Frozen:
  """No pickle ``BUILD`` may change these objects after they were checked."""

  __slots__ = ()

  def __setstate__(self, state):
    raise ValueError("the pickle tries to set attributes of a tensor or storage")


class _Storage(_Frozen):
  """A storage named by a persistent id: its zip member, element type and element count."""

  __slots__ = ("key", "dtype", "itemsize", "numel")

  def __init__(self, key: str, dtype: str, itemsize: int, numel: int):
    self.key, self.dtype, self.itemsize, self.numel = key, dtype, itemsize, numel


class _Tensor(_Frozen):
  """A tensor view as the pickle describes it; turned into a NumPy array after unpickling."""

  __slots__ = ("storage", "offset", "size", "stride")

  def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
    if not isinstance(storage, _Storage):
      raise ValueError(f"tensor storage must be a persistent storage id, got {type(storage).__name__}")
    for name, v in (("offset", offset),):
      if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"tensor {name} must be a non-negative integer, got {v!r}")
    for name, seq in (("size", size), ("stride", stride)):
      if not isinstance(seq, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                       for v in seq):
        raise ValueError(f"tensor {name} must be a tuple of non-negative integers, got {seq!r}")
    if len(size) != len(stride):
      raise ValueError(f"tensor size {tuple(size)} and stride {tuple(stride)} differ in length")
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
    self.check()

  def check(self) -> None:
    """Every element of the view lies inside the storage."""
    if math.prod(self.size) == 0:
      return
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= self.storage.numel:
      raise ValueError(f"tensor view (offset {self.offset}, size {self.size}, stride {self.stride}) reaches "
                       f"element {last}, beyond its storage of {self.storage.numel} elements")


def _rebuild_tensor(storage, offset, size, stride, *rest):
  del rest  # requires_grad, backward hooks, metadata: irrelevant to the values
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
  del requires_grad, backward_hooks, rest
  if not isinstance(data, _Tensor):
    raise ValueError(f"a parameter must wrap a tensor, got {type(data).__name__}")
  return data


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, storages: dict[str, int]):
    super().__init__(file)
    self._sizes = storages  # zip member key -> byte size
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str):
    if (module, name) not in ALLOWED_GLOBALS:
      raise UnsafePickleError(f"it names {module}.{name}, which a weights-only load does not allow "
                              f"(only tensors and ordered dicts may appear); nothing was run")
    if module == "collections":
      return collections.OrderedDict
    if module == "torch._utils":
      return _rebuild_parameter if name == "_rebuild_parameter" else _rebuild_tensor
    return ("storage-type", name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise UnsafePickleError(f"unexpected persistent id {str(pid)[:80]!r}; expected a tensor storage")
    _, kind, key, _location, numel = pid
    if not (isinstance(kind, tuple) and kind[:1] == ("storage-type",)):
      raise ValueError(f"storage {key!r} has no typed storage class")
    if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
      raise ValueError(f"malformed storage id {str(pid)[:80]!r}")
    dtype, itemsize = STORAGE_DTYPES[kind[1]]
    if key in self.storages:
      st = self.storages[key]
      if (st.dtype, st.numel) != (dtype, numel):
        raise ValueError(f"storage {key!r} is declared twice with different types or sizes")
      return st
    if key not in self._sizes:
      raise ValueError(f"storage {key!r} has no data/{key} member in the archive")
    if self._sizes[key] != numel * itemsize:
      raise ValueError(f"storage {key!r} declares {numel} x {itemsize} bytes but its archive member holds "
                       f"{self._sizes[key]} bytes")
    st = self.storages[key] = _Storage(key, dtype, itemsize, numel)
    return st


def _prefix(zf: zipfile.ZipFile, path: str) -> str:
  pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pkls) != 1:
    raise ValueError(f"{path!r} is not a PyTorch zip checkpoint (expected one <name>/data.pkl, found {len(pkls)})")
  return pkls[0][: -len("data.pkl")]


def _to_numpy(value: _Tensor, raw: dict[str, np.ndarray]) -> np.ndarray:
  value.check()
  st = value.storage
  base = raw[st.key]
  if math.prod(value.size) == 0:
    return np.zeros(value.size, np.float32 if st.dtype == "bfloat16" else base.dtype)
  if st.dtype == "bfloat16":  # widen to float32: the bits are the high half of a float32
    base = (base.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
  view = np.lib.stride_tricks.as_strided(base[value.offset:], shape=value.size,
                                         strides=tuple(s * base.itemsize for s in value.stride), writeable=False)
  return np.array(view)  # a copy: independent of the storage, contiguous


def read_state_dict(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
  """``name -> array`` of the state dict in the PyTorch zip checkpoint ``path``.

  Accepts a bare state dict or a mapping holding one under ``"state_dict"``.

  Raises:
    UnsafePickleError: the pickle names a global outside :data:`ALLOWED_GLOBALS` (nothing was run).
    ValueError: not a PyTorch zip checkpoint (e.g. the pre-1.6 format), a storage or view that does
      not match the archive, more than ``max_bytes`` of tensors, or no mapping of tensors inside.
  """
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile:
    raise ValueError(f"{path!r} is not a PyTorch zip checkpoint (files saved by torch < 1.6, or with "
                     f"_use_new_zipfile_serialization=False, are not supported: re-save with a recent torch)") from None
  with zf:
    prefix = _prefix(zf, path)
    infos = {i.filename: i for i in zf.infolist()}
    order = "little"
    if prefix + "byteorder" in infos:
      order = zf.read(prefix + "byteorder")[:16].decode("ascii", "replace").strip()
      if order not in ("little", "big"):
        raise ValueError(f"{path!r}: unknown byteorder {order!r}")
    sizes = {name[len(prefix) + len("data/"):]: info.file_size for name, info in infos.items()
             if name.startswith(prefix + "data/") and not name.endswith("/")}
    pkl = infos[prefix + "data.pkl"]
    if pkl.file_size > MAX_PICKLE_BYTES:
      raise ValueError(f"{path!r}: data.pkl declares {pkl.file_size} bytes, more than {MAX_PICKLE_BYTES}")
    with zf.open(pkl) as f:
      payload = f.read(MAX_PICKLE_BYTES + 1)
    if len(payload) > MAX_PICKLE_BYTES:
      raise ValueError(f"{path!r}: data.pkl is larger than {MAX_PICKLE_BYTES} bytes")
    unpickler = _Unpickler(io.BytesIO(payload), sizes)
    try:
      obj = unpickler.load()
    except UnsafePickleError as err:
      raise UnsafePickleError(f"refusing {path!r}: {err}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as err:
      raise ValueError(f"{path!r}: malformed data.pkl ({type(err).__name__}: {err})") from None
    total = sum(st.numel * st.itemsize for st in unpickler.storages.values())
    if total > max_bytes:
      raise ValueError(f"{path!r} declares {total} bytes of tensors, more than the limit of {max_bytes}")
    raw = {}
    for key, st in unpickler.storages.items():
      info = infos[prefix + "data/" + key]
      with zf.open(info) as f:
        data = f.read(st.numel * st.itemsize + 1)
      if len(data) != st.numel * st.itemsize:
        raise ValueError(f"{path!r}: storage {key!r} holds {len(data)} bytes, expected {st.numel * st.itemsize}")
      dtype = np.dtype("uint16" if st.dtype == "bfloat16" else st.dtype).newbyteorder("<" if order == "little"
                                                                                      else ">")
      raw[key] = np.frombuffer(data, dtype).astype(dtype.newbyteorder("="))
  if isinstance(obj, collections.abc.Mapping) and isinstance(obj.get("state_dict"), collections.abc.Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, collections.abc.Mapping):
    raise ValueError(f"{path!r} does not hold a state_dict (got {type(obj).__name__})")
  out = {}
  for name, value in obj.items():
    if not isinstance(name, str):
      raise ValueError(f"{path!r}: state_dict key {name!r} is not a string")
    if not isinstance(value, _Tensor):
      raise ValueError(f"{path!r}: state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
    out[name] = _to_numpy(value, raw)
  return out
