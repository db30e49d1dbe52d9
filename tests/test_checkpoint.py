"""The cache store (:mod:`unlearn_jax.checkpoint`): atomic writes, verified entries, cache keys.

* ``save_arrays`` / ``load_arrays`` round-trip a flat mapping with its manifest; any damage
  (a flipped byte, a truncation, garbage, a manifest that disagrees with the arrays) is a
  ``CorruptEntry``;
* ``ChunkStore`` deletes and reports a corrupt entry, and one copied into the wrong place
  (another chunk's name, another cache), so the caller recomputes it;
* writes are atomic, leave no temporary file and give the file the umask's mode.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest

from unlearn_jax import checkpoint
from unlearn_jax.data import SplitSpec
from unlearn_jax.training import digits_recipe


def test_save_load_roundtrip_and_tree_flattening(tmp_path):
  tree = {"params": {"fc1": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.ones(3)}},
          "out": {"acc": np.float32(0.5)}}
  path = str(tmp_path / "entry.npz")
  checkpoint.save_arrays(path, checkpoint.flatten_tree(tree), {"note": "x"})
  arrays, meta = checkpoint.load_arrays(path)
  assert meta == {"note": "x"}
  back = checkpoint.unflatten_tree(arrays)
  np.testing.assert_array_equal(back["params"]["fc1"]["kernel"], tree["params"]["fc1"]["kernel"])
  assert back["params"]["fc1"]["bias"].dtype == np.float64
  assert float(back["out"]["acc"]) == 0.5
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_entries_are_detected_deleted_and_reported(tmp_path, damage):
  store = checkpoint.ChunkStore(str(tmp_path / "store"))
  store.save(0, 4, {"out/x": np.arange(4000, dtype=np.float32)})
  path = store.path(0, 4)
  raw = bytearray(pathlib.Path(path).read_bytes())
  if damage == "flip":
    # the array payload starts after the zip member header; flip a byte in the middle of the data
    raw[len(raw) // 3] ^= 0xFF
  elif damage == "truncate":
    raw = raw[: len(raw) // 2]
  else:
    raw = bytearray(b"not a zip file at all")
  pathlib.Path(path).write_bytes(bytes(raw))
  with pytest.raises(checkpoint.CorruptEntry):
    checkpoint.load_arrays(path)
  assert store.load(0, 4) is None
  assert not os.path.exists(path)
  assert len(store.rebuilt) == 1 and "chunk-000000-000004" in store.rebuilt[0]


def test_cache_key_is_stable_and_sensitive():
  parts = dict(kind="retrained", split=SplitSpec(), recipe=digits_recipe(), seed=0)
  assert checkpoint.cache_key(parts) == checkpoint.cache_key(dict(parts))
  assert checkpoint.cache_key(parts) != checkpoint.cache_key(dict(parts, recipe=digits_recipe(epochs=3)))
  assert checkpoint.cache_key(parts) != checkpoint.cache_key(dict(parts, split=SplitSpec(fraction=0.2)))
  assert checkpoint.cache_key(parts) != checkpoint.cache_key(dict(parts, seed=1))
  assert json.loads(checkpoint.describe(parts))["recipe"]["epochs"] == 20


def test_chunk_copied_over_another_chunk_or_from_another_store_is_rebuilt(tmp_path):
  store = checkpoint.ChunkStore(str(tmp_path / "a"), '{"kind": "retrained", "seed": 0}')
  other = checkpoint.ChunkStore(str(tmp_path / "b"), '{"kind": "retrained", "seed": 1}')
  for lo in (0, 8):
    store.save(lo, lo + 8, {"out/x": np.arange(lo, lo + 8)})
    other.save(lo, lo + 8, {"out/x": -np.arange(lo, lo + 8)})
  np.testing.assert_array_equal(store.load(8, 16)["out/x"], np.arange(8, 16))
  os.replace(store.path(0, 8), store.path(8, 16))  # a valid entry under another chunk's name
  assert store.load(8, 16) is None and not os.path.exists(store.path(8, 16))
  assert "chunk-000008-000016.npz: entry records seeds 0-8" in store.rebuilt[0]
  assert "but this file holds seeds 8-16" in store.rebuilt[0]
  with open(other.path(0, 8), "rb") as f:  # a valid entry of another cache under the right name
    raw = f.read()
  checkpoint.atomic_write_bytes(store.path(0, 8), raw)
  assert store.load(0, 8) is None and f"cache key {other.key}" in store.rebuilt[1]
  store.save_entry("model", {"w": np.ones(2)})
  os.replace(os.path.join(store.directory, "model.npz"), os.path.join(store.directory, "optimizer.npz"))
  assert store.load_entry("optimizer") is None and "entry records entry 'model'" in store.rebuilt[2]


def _rewrite_manifest(path, edit):
  """Rewrites the manifest member of an entry with ``edit(manifest)`` applied (arrays untouched)."""
  with zipfile.ZipFile(path) as z:
    members = {name: z.read(name) for name in z.namelist()}
  manifest_array = np.load(io.BytesIO(members[checkpoint.MANIFEST + ".npy"]))
  manifest = json.loads(bytes(manifest_array).decode())
  edit(manifest)
  buf = io.BytesIO()
  np.save(buf, np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), np.uint8))
  members[checkpoint.MANIFEST + ".npy"] = buf.getvalue()
  with zipfile.ZipFile(path, "w") as z:
    for name, data in members.items():
      z.writestr(name, data)


@pytest.mark.parametrize("edit, what", [
    (lambda m: m["arrays"]["x"].update(sha256="0" * 64), "fails its checksum"),
    (lambda m: m["arrays"]["x"].update(dtype="float64"), "fails its checksum"),
    (lambda m: m["arrays"]["x"].update(shape=[2, 2]), "fails its checksum"),
    (lambda m: m["arrays"].pop("y"), "array names differ from the manifest"),
])
def test_an_entry_whose_arrays_disagree_with_its_manifest_is_corrupt(tmp_path, edit, what):
  path = str(tmp_path / "entry.npz")
  checkpoint.save_arrays(path, {"x": np.arange(4, dtype=np.float32), "y": np.ones(2)}, {"k": 1})
  assert checkpoint.load_arrays(path)[1] == {"k": 1}
  _rewrite_manifest(path, edit)
  with pytest.raises(checkpoint.CorruptEntry, match=what):
    checkpoint.load_arrays(path)


def test_headers_are_checked_against_the_manifest_before_an_array_is_read(tmp_path, monkeypatch):
  path = str(tmp_path / "entry.npz")
  checkpoint.save_arrays(path, {"x": np.arange(4, dtype=np.float32), "y": np.ones(2)})
  _rewrite_manifest(path, lambda m: m["arrays"]["y"].update(shape=[3]))
  real, read = np.lib.npyio.NpzFile.__getitem__, []

  def spy(self, key):
    read.append(key)
    return real(self, key)

  monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
  with pytest.raises(checkpoint.CorruptEntry, match=r"array 'y' fails its checksum \(its header declares float64 "
                                                    r"\[2\], the manifest float64 \[3\]\)"):
    checkpoint.load_arrays(path)
  assert "y" not in read  # refused from its header: the array itself was never loaded


def test_loading_allocates_about_the_arrays_not_twice_the_file(tmp_path):
  import tracemalloc
  path = str(tmp_path / "big.npz")
  arrays = {"a": np.arange(3 << 20, dtype=np.float32), "b": np.ones((1 << 20,), np.float64)}  # 20 MiB in all
  checkpoint.save_arrays(path, arrays)
  size = os.path.getsize(path)
  tracemalloc.start()
  try:
    loaded, _ = checkpoint.load_arrays(path)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  for k, v in arrays.items():
    np.testing.assert_array_equal(loaded[k], v)
  assert peak < 1.25 * size, (peak, size)  # the arrays (the file's size) and small read buffers, no whole-file copy


def test_reserved_name_and_missing_file():
  with pytest.raises(ValueError, match="reserved"):
    checkpoint.save_arrays("/nonexistent/never-written.npz", {checkpoint.MANIFEST: np.zeros(1)})
  with pytest.raises(FileNotFoundError):
    checkpoint.load_arrays("/nonexistent/entry.npz")


def test_atomic_write_takes_the_umask_mode_and_leaves_nothing_behind_on_failure(tmp_path):
  old = os.umask(0o027)
  try:
    path = tmp_path / "a.txt"
    checkpoint.atomic_write_text(str(path), "one")
    assert path.read_text() == "one" and (path.stat().st_mode & 0o777) == 0o640
    checkpoint.atomic_write_text(str(path), "two")  # replaces, never appends
    assert path.read_text() == "two"
  finally:
    os.umask(old)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoint.atomic_write_text(str(tmp_path / "missing" / "b.txt"), "x", make_dirs=False)
  target = tmp_path / "dir-in-the-way"
  target.mkdir()
  with pytest.raises(OSError, match="dir-in-the-way"):  # the message names the path
    checkpoint.atomic_write_bytes(str(target), b"x")  # a folder is never replaced
  assert target.is_dir()
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_store_round_trips_chunks_and_named_entries_and_records_its_key(tmp_path):
  description = '{"kind": "original", "seed": 3}'
  store = checkpoint.ChunkStore(str(tmp_path / "s"), description)
  assert (tmp_path / "s" / "key.json").read_text() == description
  assert not store.exists(0, 2) and store.load(0, 2) is None and store.rebuilt == []  # missing is not corrupt
  store.save(0, 2, {"out/v": np.array([1.5, 2.5])})
  assert store.exists(0, 2)
  np.testing.assert_array_equal(store.load(0, 2)["out/v"], [1.5, 2.5])
  store.save_entry("model", {"w": np.arange(3)})
  np.testing.assert_array_equal(store.load_entry("model")["w"], np.arange(3))
  assert store.load_entry("absent") is None and store.rebuilt == []
  reopened = checkpoint.ChunkStore(str(tmp_path / "s"), description)  # the same cache opened again
  np.testing.assert_array_equal(reopened.load(0, 2)["out/v"], [1.5, 2.5])
  other = checkpoint.ChunkStore(str(tmp_path / "s"), '{"kind": "original", "seed": 4}')  # same folder, other key
  assert other.load(0, 2) is None and len(other.rebuilt) == 1 and not store.exists(0, 2)


def test_tree_flattening_inverts_exactly():
  tree = {"a": {"b": np.zeros((2, 3), np.int32), "c": {"d": np.ones(1, np.float16)}}, "e": np.arange(2)}
  flat = checkpoint.flatten_tree(tree)
  assert sorted(flat) == ["a/b", "a/c/d", "e"]
  back = checkpoint.unflatten_tree(flat)
  assert back.keys() == tree.keys() and back["a"]["c"]["d"].dtype == np.float16
  np.testing.assert_array_equal(back["a"]["b"], tree["a"]["b"])
