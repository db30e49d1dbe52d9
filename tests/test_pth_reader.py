"""Reading PyTorch ``.pth`` files without PyTorch (:mod:`unlearn_jax.interop.pth`).

Fixtures in ``tests/data/pth`` were written by PyTorch (see the README there): a small
torchvision-named state dict with its expected arrays, a file with a ``__reduce__``
payload, and the logits torchvision's ResNet-18 gives for seeded weights and inputs.
A full ResNet-18 ``.pth`` (~45 MB) is not shipped: :func:`write_pth` below, an
independent writer of the same zip + pickle layout (checked against the PyTorch-written
fixture's structure), writes the seeded weights here and the reader reads them back.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np
import pytest

from tests.pth_support import random_state_dict, write_pth
from unlearn_jax.interop import import_torchvision_resnet18, load_torch_state_dict, pth
from unlearn_jax.models import get_model

DATA = os.path.join(os.path.dirname(__file__), "data", "pth")
SMALL = os.path.join(DATA, "small_state_dict.pth")
PAYLOAD = os.path.join(DATA, "payload.pth")
MARKER = "pth_payload_marker.txt"
def _structure(path):
  """(members without the archive folder, globals named, persistent ids) of a .pth file."""
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    prefix = next(n for n in names if n.endswith("/data.pkl"))[: -len("data.pkl")]
    pkl = zf.read(prefix + "data.pkl")
  members = {n[len(prefix):] for n in names if not n[len(prefix):].startswith(".")}
  globals_, pids = set(), []
  ops = list(pickletools.genops(pkl))
  for op, arg, _ in ops:
    if op.name == "GLOBAL":
      globals_.add(arg)

  class Recorder(pickle.Unpickler):
    def find_class(self, module, name):
      if name.endswith("Storage"):
        return f"{module}.{name}"
      return lambda *a, **k: collections.OrderedDict() if name == "OrderedDict" else (module, name, a)

    def persistent_load(self, pid):
      pids.append(tuple(pid))
      return pid

  Recorder(io.BytesIO(pkl)).load()
  return members, globals_, pids


# ---------------------------------------------------------------- the PyTorch-written fixtures


def test_pytorch_written_state_dict_loads_to_the_stored_arrays():
  got = pth.read_state_dict(SMALL)
  with np.load(os.path.join(DATA, "small_state_dict_expected.npz")) as z:
    want = {k: z[k] for k in z.files}
  assert list(got) == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                       "bn1.num_batches_tracked", "fc.weight", "fc.bias"]  # the module order, as saved
  assert set(got) == set(want)
  for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    np.testing.assert_array_equal(got[k], want[k])
  assert got["bn1.num_batches_tracked"].dtype == np.int64 and int(got["bn1.num_batches_tracked"]) == 3
  assert not np.allclose(got["bn1.running_var"], 1.0)  # real running statistics were saved
  assert load_torch_state_dict(SMALL).keys() == got.keys()


def test_payload_is_refused_and_its_code_is_not_run(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(pth.UnsafePickleError, match="io.open|builtins.open|_io.open"):
    pth.read_state_dict(PAYLOAD)
  assert not (tmp_path / MARKER).exists()


def test_payload_fixture_is_live_under_an_unrestricted_unpickler(tmp_path, monkeypatch):
  """The refusal above is meaningful: plain unpickling of the same data.pkl does create the marker."""
  monkeypatch.chdir(tmp_path)
  with zipfile.ZipFile(PAYLOAD) as zf:
    pkl = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))

  class Plain(pickle.Unpickler):
    def find_class(self, module, name):
      if module.startswith("torch"):
        return lambda *a, **k: None
      return super().find_class(module, name)

    def persistent_load(self, pid):
      return None

  obj = Plain(io.BytesIO(pkl)).load()
  obj["payload"].close()
  assert (tmp_path / MARKER).exists()


def test_independent_writer_follows_the_pytorch_layout(tmp_path):
  with np.load(os.path.join(DATA, "small_state_dict_expected.npz")) as z:
    want = {k: z[k] for k in ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                              "bn1.num_batches_tracked", "fc.weight", "fc.bias"]}
  ours = tmp_path / "small.pth"
  write_pth(ours, want, archive="small_state_dict")
  m_torch, g_torch, p_torch = _structure(SMALL)
  m_ours, g_ours, p_ours = _structure(ours)
  assert m_ours == m_torch  # data.pkl, byteorder, version, data/0 ... data/7
  assert g_ours == g_torch  # OrderedDict, _rebuild_tensor_v2, FloatStorage, LongStorage
  assert p_ours == p_torch  # ("storage", "torch.FloatStorage", "0", "cpu", 108), ... in the same order
  assert ("storage", "torch.LongStorage", "5", "cpu", 1) in p_torch
  back = pth.read_state_dict(ours)
  for k in want:
    np.testing.assert_array_equal(back[k], want[k])


def test_full_size_torchvision_state_dict_drives_our_resnet18_to_torchvisions_logits(tmp_path):
  stored = np.load(os.path.join(DATA, "resnet18_seeded_logits.npz"))
  sd = random_state_dict(np.random.default_rng(int(stored["resnet_seed"])))
  path = tmp_path / "resnet18.pth"
  write_pth(path, sd)
  assert path.stat().st_size > 40e6  # the real size of a ResNet-18 state dict
  back = pth.read_state_dict(str(path))
  assert list(back) == list(sd)
  params, batch_stats = import_torchvision_resnet18(back)
  x = np.random.default_rng(int(stored["input_seed"])).normal(size=stored["logits"].shape[:1] + (3, 32, 32))
  model = get_model("resnet18", 10)
  logits = np.asarray(model.apply({"params": params, "batch_stats": batch_stats},
                                  np.transpose(x.astype(np.float32), (0, 2, 3, 1)), train=False))
  assert np.abs(stored["logits"]).max() > 0.1
  np.testing.assert_allclose(logits, stored["logits"], rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- hostile and odd files


def test_strided_views_and_shared_storages_are_read_as_torch_lays_them_out(tmp_path):
  base = np.arange(24, dtype=np.float32)
  path = tmp_path / "views.pth"
  write_pth(path, {"t": ("s", 2, (3, 4), (1, 3)), "row": ("s", 10, (5,), (2,)), "scalar": ("s", 23, (), ())},
            storages={"s": base})
  got = pth.read_state_dict(str(path))
  np.testing.assert_array_equal(got["t"], base[2:14].reshape(4, 3).T)
  np.testing.assert_array_equal(got["row"], base[10:20:2])
  assert got["scalar"].shape == () and float(got["scalar"]) == 23.0


def test_declared_storage_larger_than_its_member_is_refused_before_reading(tmp_path):
  path = tmp_path / "lie.pth"
  write_pth(path, {"w": np.zeros(4, np.float32)})
  with zipfile.ZipFile(path) as zf:
    files = {n: zf.read(n) for n in zf.namelist()}
  pkl = files["archive/data.pkl"].replace(b"J\x04\x00\x00\x00tQ", b"J\x00\x00\x00\x40tQ")  # numel 2**30
  files["archive/data.pkl"] = pkl
  with zipfile.ZipFile(path, "w") as zf:
    for n, b in files.items():
      zf.writestr(n, b)
  with pytest.raises(ValueError, match="declares 1073741824 x 4 bytes but its archive member holds 16"):
    pth.read_state_dict(str(path))


def test_view_outside_its_storage_and_size_limit_are_refused(tmp_path):
  path = tmp_path / "oob.pth"
  write_pth(path, {"t": ("s", 20, (3, 4), (4, 1))}, storages={"s": np.zeros(24, np.float32)})
  with pytest.raises(ValueError, match="beyond its storage of 24 elements"):
    pth.read_state_dict(str(path))
  ok = tmp_path / "ok.pth"
  write_pth(ok, {"w": np.zeros(1000, np.float32)})
  with pytest.raises(ValueError, match="more than the limit of 100"):
    pth.read_state_dict(str(ok), max_bytes=100)


def test_setting_attributes_on_a_checked_tensor_is_refused(tmp_path):
  path = tmp_path / "build.pth"

  def tamper(ops, name):  # BUILD with slot state {"offset": 10**6}: would read far outside the storage
    ops.raw(b"N}")
    ops.text("offset")
    ops.raw(b"J" + struct.pack("<i", 10 ** 6) + b"s\x86b")

  write_pth(path, {"w": np.zeros(4, np.float32)}, tamper=tamper)
  with pytest.raises(ValueError, match="set attributes"):
    pth.read_state_dict(str(path))


def test_non_tensor_values_legacy_files_and_foreign_globals_are_refused(tmp_path):
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
  with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
    pth.read_state_dict(str(legacy))
  odd = tmp_path / "odd.pth"

  def add_int(ops, name):  # a second entry whose value is a plain int
    ops.text("extra")
    ops.int(5)

  write_pth(odd, {"w": np.zeros(2, np.float32)}, tamper=add_int)
  with pytest.raises(ValueError, match="'extra' is a int, not a tensor"):
    pth.read_state_dict(str(odd))
  evil = tmp_path / "evil.pth"
  with zipfile.ZipFile(evil, "w") as zf:
    zf.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
  with pytest.raises(pth.UnsafePickleError, match="os.system"):
    pth.read_state_dict(str(evil))
