"""Test support for PyTorch checkpoints, shared by the ``.pth`` reader, torchvision-import and
original-model tests: a torchvision-layout ResNet-18 state dict of seeded random arrays, and an
independent writer of PyTorch's zip + pickle ``.pth`` layout (no torch, no pickler; checked
against the PyTorch-written fixture's structure in ``test_pth_reader.py``)."""

from __future__ import annotations

import struct
import zipfile

import numpy as np

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


def random_state_dict(rng, num_classes=10):
  """A torchvision-layout resnet18 state_dict of random NumPy arrays (BN stats included)."""
  sd = {}

  def conv(name, o, i, k):
    sd[f"{name}.weight"] = rng.normal(0, np.sqrt(2.0 / (i * k * k)), (o, i, k, k)).astype(np.float32)

  def bn(name, c):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  cin = 64
  for s, (c, stride) in enumerate(STAGES):
    for b in range(2):
      p = f"layer{s + 1}.{b}"
      conv(f"{p}.conv1", c, cin if b == 0 else c, 3)
      bn(f"{p}.bn1", c)
      conv(f"{p}.conv2", c, c, 3)
      bn(f"{p}.bn2", c)
      if b == 0 and (stride != 1 or cin != c):
        conv(f"{p}.downsample.0", c, cin, 1)
        bn(f"{p}.downsample.1", c)
    cin = c
  sd["fc.weight"] = rng.normal(0, 0.05, (num_classes, 512)).astype(np.float32)
  sd["fc.bias"] = rng.normal(0, 0.05, num_classes).astype(np.float32)
  return sd



STORAGE_OF = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage",
              np.dtype("float16"): "HalfStorage", np.dtype("float64"): "DoubleStorage"}


# ---------------------------------------------------------------- an independent writer of the layout


class _Ops:
  """Pickle protocol-2 opcodes, emitted by hand (no torch, no pickler)."""

  def __init__(self):
    self.out = bytearray(b"\x80\x02")

  def glob(self, module, name):
    self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

  def text(self, s):
    b = s.encode()
    self.out += b"X" + struct.pack("<I", len(b)) + b

  def int(self, v):
    self.out += b"J" + struct.pack("<i", v)

  def tuple_of_ints(self, values):
    self.out += b"("
    for v in values:
      self.int(v)
    self.out += b"t"

  def raw(self, b):
    self.out += b


def write_pth(path, entries, archive="archive", storages=None, tamper=None):
  """Writes ``entries`` (name -> array, or name -> (storage key, offset, size, stride)) as ``torch.save``
  writes a state dict. ``storages``: key -> array for entries given as views; ``tamper(ops, name)``
  may append opcodes after an entry's tensor (hostile-file tests)."""
  ops = _Ops()
  ops.glob("collections", "OrderedDict")
  ops.raw(b")R(")
  members, storages = {}, dict(storages or {})
  for name, value in entries.items():
    if isinstance(value, tuple):
      key, offset, size, stride = value
      arr = storages[key]
    else:
      arr = np.ascontiguousarray(value)
      key, offset, size = str(len(storages)), 0, arr.shape
      stride = tuple(int(np.prod(arr.shape[i + 1:])) for i in range(arr.ndim))
      storages[key] = arr
    ops.text(name)
    ops.glob("torch._utils", "_rebuild_tensor_v2")
    ops.raw(b"((")
    ops.text("storage")
    ops.glob("torch", STORAGE_OF[arr.dtype])
    ops.text(key)
    ops.text("cpu")
    ops.int(arr.size)
    ops.raw(b"tQ")  # the persistent id tuple, then BINPERSID
    ops.int(offset)
    ops.tuple_of_ints(size)
    ops.tuple_of_ints(stride)
    ops.raw(b"\x89")  # requires_grad False
    ops.glob("collections", "OrderedDict")
    ops.raw(b")RtR")  # backward hooks OrderedDict(), close the args tuple, call the rebuild
    if tamper is not None:
      tamper(ops, name)
  ops.raw(b"u.")  # SETITEMS, STOP
  for key, arr in storages.items():
    members[f"data/{key}"] = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr(f"{archive}/data.pkl", bytes(ops.out))
    zf.writestr(f"{archive}/byteorder", b"little")
    for name, data in members.items():
      zf.writestr(f"{archive}/{name}", data)
    zf.writestr(f"{archive}/version", b"3\n")
