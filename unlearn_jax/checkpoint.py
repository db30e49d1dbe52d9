"""Atomic, self-verifying storage of models and per-chunk outputs, and cache keys.

Format: one NumPy ``.npz`` per entry, written to a temporary file in the same
directory, flushed, ``fsync``-ed and moved into place with ``os.replace`` (then
the directory is ``fsync``-ed), so a reader sees either the old file or the
complete new one, even after ``SIGKILL`` or power loss. Each file embeds a
manifest (``__manifest__``: JSON with the SHA-256 of every array's bytes, its
dtype and shape); :func:`load_arrays` recomputes the hashes and raises
:class:`CorruptEntry` on any mismatch or unreadable file, so a damaged cache
entry is detected, rebuilt and reported instead of being trusted.

Why not orbax-checkpoint: the entries here are small host-side pytrees
(one chunk of models plus their accuracies and confidences) that are written
once and read whole. Orbax writes a directory per checkpoint through
TensorStore with background threads and finalises it by a rename; it has no
per-file content checksum to catch a truncated or bit-flipped entry, and
multi-host orbax saves are collective, whereas our chunks are written by
whichever process computed them. A single ``.npz`` with an embedded manifest
gives atomicity, verification and independent writers with NumPy alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from typing import Any, Mapping, Optional

import jax
import numpy as np

from unlearn_jax import files

MANIFEST = "__manifest__"
SEP = "/"


class CorruptEntry(Exception):
  """A cache file that exists but fails to load or verify."""


def _fsync_dir(path: str) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _umask() -> int:
  """The process's umask (read from ``/proc`` where possible: setting it to query it races with threads)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def atomic_write_bytes(path: str, data: bytes, make_dirs: bool = True) -> None:
  """Writes ``data`` to ``path`` atomically (tmp + fsync + ``os.replace``).

  The file gets the mode an ordinary ``open(path, "w")`` would give it
  (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``, so a cache
  shared through group permissions stays readable. ``make_dirs=False`` refuses
  a missing parent folder instead of creating it. A failed write (a full disk,
  no permission) raises ``OSError`` naming ``path`` and leaves no partial file.
  A ``path`` that exists and is not a regular file (a device, FIFO, folder or
  symbolic link) is refused with :class:`unlearn_jax.files.NotARegularFile`
  before anything is written: it is never replaced nor written through.
  """
  files.refuse_special_target(path)
  directory = os.path.dirname(os.path.abspath(path))
  if make_dirs:
    os.makedirs(directory, exist_ok=True)
  elif not os.path.isdir(directory):
    raise FileNotFoundError(f"cannot write {path!r}: folder {directory!r} does not exist")
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    with os.fdopen(fd, "wb") as f:
      os.fchmod(f.fileno(), 0o666 & ~_umask())
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    files.refuse_special_target(path)  # again, right before the rename: it may have appeared meanwhile
    os.replace(tmp, path)
  except BaseException as err:
    if tmp is not None and os.path.exists(tmp):
      os.unlink(tmp)
    if isinstance(err, OSError) and path not in str(err):
      raise OSError(err.errno, f"cannot write {path!r}: {err.strerror or err}") from None
    raise
  _fsync_dir(directory)


def atomic_write_text(path: str, text: str, make_dirs: bool = True) -> None:
  """UTF-8 text version of :func:`atomic_write_bytes`."""
  atomic_write_bytes(path, text.encode("utf-8"), make_dirs=make_dirs)


def _digest(a: np.ndarray) -> str:
  """SHA-256 of the array's bytes in C order (hashed in place: no copy of a contiguous array)."""
  flat = np.ascontiguousarray(a).reshape(-1)
  if flat.dtype.hasobject or not flat.dtype.itemsize:
    return hashlib.sha256(flat.tobytes()).hexdigest()
  return hashlib.sha256(flat.view(np.uint8)).hexdigest()


def save_arrays(path: str, arrays: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> None:
  """Saves a flat ``name -> array`` mapping (plus JSON ``meta``) atomically with a manifest."""
  host = {k: np.asarray(v) for k, v in arrays.items()}
  if MANIFEST in host:
    raise ValueError(f"array name {MANIFEST!r} is reserved")
  manifest = {
      "arrays": {k: {"sha256": _digest(v), "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in host.items()},
      "meta": dict(meta or {}),
  }
  buf = io.BytesIO()
  np.savez(buf, **host, **{MANIFEST: np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), np.uint8)})
  atomic_write_bytes(path, buf.getvalue())


# Entries are read whole: a file over this share of the available memory is refused unread.
MEMORY_SHARE = 0.5


def load_arrays(path: str, max_bytes: Optional[int] = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Loads and verifies a file written by :func:`save_arrays`: ``(arrays, meta)``.

  Before a byte is read the entry must be a regular file (a symbolic link is not
  followed, a FIFO is not waited on) no larger than ``max_bytes`` (default:
  :data:`MEMORY_SHARE` of :func:`unlearn_jax.files.available_memory`). Before an
  array is decompressed its member must be stored uncompressed, as :func:`save_arrays`
  writes it, with a ``.npy`` header that agrees with the zip directory, and its
  header's dtype and shape must be the manifest's. The file is read one member at a
  time, never whole, so what loading allocates is the arrays themselves: at most
  the file's own size (a zip bomb is refused unread).

  Raises:
    FileNotFoundError: when ``path`` does not exist.
    CorruptEntry: when it is not a regular file, too large, cannot be read, or a
      hash, dtype or shape differs.
  """
  if not os.path.lexists(path):
    raise FileNotFoundError(path)
  bound = int(files.available_memory() * MEMORY_SHARE) if max_bytes is None else int(max_bytes)
  try:
    f = files.open_bounded(path, bound, "cache entry")
  except files.BadFile as err:
    raise CorruptEntry(" ".join(str(err).split())) from None  # names the path already
  except FileNotFoundError:
    raise
  except OSError as err:
    raise CorruptEntry(f"{path}: unreadable ({type(err).__name__}: {err})") from None
  with f:
    try:
      members = files.npz_members(f, path, require_stored=True)
    except files.BadFile as err:
      raise CorruptEntry(" ".join(str(err).split())) from None
    try:
      f.seek(0)
      with np.load(f, allow_pickle=False) as z:
        if MANIFEST not in members or members[MANIFEST].dtype != np.uint8 or len(members[MANIFEST].shape) != 1:
          raise CorruptEntry(f"{path}: no manifest")
        manifest = json.loads(bytes(z[MANIFEST]).decode())
        expected = manifest.get("arrays", {})
        if set(expected) != set(members) - {MANIFEST}:
          raise CorruptEntry(f"{path}: array names differ from the manifest")
        arrays = {}
        for k, info in expected.items():  # the header against the manifest before the array is read
          m = members[k]
          if str(m.dtype) != info["dtype"] or list(m.shape) != info["shape"]:
            raise CorruptEntry(f"{path}: array {k!r} fails its checksum (its header declares {m.dtype} "
                               f"{list(m.shape)}, the manifest {info['dtype']} {info['shape']})")
          a = z[k]
          if str(a.dtype) != info["dtype"] or list(a.shape) != info["shape"] or _digest(a) != info["sha256"]:
            raise CorruptEntry(f"{path}: array {k!r} fails its checksum")
          arrays[k] = a
    except CorruptEntry:
      raise
    except Exception as err:  # any unreadable file is corrupt: zip, header or JSON errors
      raise CorruptEntry(f"{path}: unreadable ({type(err).__name__}: {' '.join(str(err).split())})") from None
  return arrays, manifest.get("meta", {})


def flatten_tree(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """A nested-dict pytree as ``{"a/b/c": array}`` (host NumPy)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = SEP.join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
    out[prefix + name] = np.asarray(leaf)
  return out


def unflatten_tree(flat: Mapping[str, np.ndarray], prefix: str = "") -> dict:
  """Inverse of :func:`flatten_tree` for nested dicts of arrays."""
  tree: dict = {}
  for name, leaf in flat.items():
    if not name.startswith(prefix):
      continue
    parts = name[len(prefix):].split(SEP)
    node = tree
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = leaf
  return tree


def _canonical(obj: Any) -> Any:
  if isinstance(obj, Mapping):
    return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
  if isinstance(obj, (list, tuple)):
    return [_canonical(v) for v in obj]
  if isinstance(obj, (np.integer, np.floating)):
    return obj.item()
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  if hasattr(obj, "__dataclass_fields__"):
    return {"__type__": type(obj).__name__,
            **{k: _canonical(getattr(obj, k)) for k in sorted(obj.__dataclass_fields__)}}
  return repr(obj)


def cache_key(parts: Mapping[str, Any]) -> str:
  """A stable 16-hex-digit key of a JSON-able description (dataclasses allowed)."""
  text = json.dumps(_canonical(parts), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(parts: Mapping[str, Any]) -> str:
  """The canonical JSON text a :func:`cache_key` hashes (stored next to the entry)."""
  return json.dumps(_canonical(parts), sort_keys=True, indent=1)


class ChunkStore:
  """Per-chunk files ``chunk-<lo>-<hi>.npz`` in one directory.

  Every entry records what it is: a chunk its seed range ``lo``/``hi``, a named
  entry its ``name``, and both the store's ``key`` (a digest of the cache
  description). ``load`` compares them with the file it reads and the store it
  reads from, so a valid entry copied into the wrong place (another chunk's
  name, another cache) is treated like a checksum failure. ``load`` returns
  ``None`` for a missing chunk; a corrupt or misplaced one is deleted, recorded
  in :attr:`rebuilt` (so the caller recomputes and reports it) and also
  returns ``None``.
  """

  def __init__(self, directory: str, description: Optional[str] = None):
    self.directory = directory
    self.rebuilt: list[str] = []
    self.key = hashlib.sha256(description.encode()).hexdigest()[:16] if description is not None else None
    os.makedirs(directory, exist_ok=True)
    if description is not None:
      key_file = os.path.join(directory, "key.json")
      if os.path.lexists(key_file) and not os.path.isfile(key_file) or os.path.islink(key_file):
        remove_entry(key_file)  # a link, folder or device in our place: ours to replace
      if not os.path.exists(key_file):
        atomic_write_text(key_file, description)

  def path(self, lo: int, hi: int) -> str:
    return os.path.join(self.directory, f"chunk-{lo:06d}-{hi:06d}.npz")

  def exists(self, lo: int, hi: int) -> bool:
    return os.path.lexists(self.path(lo, hi))

  def _clear(self, path: str) -> None:
    """Removes what sits at ``path`` if it is not a regular file (recorded as rebuilt), so a save can replace it."""
    try:
      mode = os.lstat(path).st_mode
    except FileNotFoundError:
      return
    if not stat.S_ISREG(mode):
      self.rebuilt.append(f"{path}: a {files.kind_of(mode)}, not a regular file")
      remove_entry(path)

  def save(self, lo: int, hi: int, arrays: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None) -> None:
    self._clear(self.path(lo, hi))
    save_arrays(self.path(lo, hi), arrays, dict(meta or {}, lo=lo, hi=hi, key=self.key))

  def _load_path(self, path: str, identity: Mapping[str, Any]) -> Optional[dict[str, np.ndarray]]:
    """Arrays at ``path``; ``None`` when absent, or when corrupt or misplaced (then removed and reported).

    ``identity``: the meta fields the entry must carry to belong at ``path`` in this store.
    """
    try:
      arrays, meta = load_arrays(path)
      expected = dict(identity, key=self.key) if self.key is not None else dict(identity)
      found = {k: meta.get(k) for k in expected}
      if found != expected:
        raise CorruptEntry(f"{path}: entry records {_identity_text(found)} but this file holds "
                           f"{_identity_text(expected)} (an entry copied from elsewhere)")
    except FileNotFoundError:
      return None
    except CorruptEntry as err:
      self.rebuilt.append(str(err))
      remove_entry(path)
      return None
    return arrays

  def load(self, lo: int, hi: int) -> Optional[dict[str, np.ndarray]]:
    return self._load_path(self.path(lo, hi), {"lo": lo, "hi": hi})

  def load_entry(self, name: str) -> Optional[dict[str, np.ndarray]]:
    """Like :meth:`load` for a named (non-chunk) entry ``<name>.npz``."""
    return self._load_path(os.path.join(self.directory, f"{name}.npz"), {"name": name})

  def save_entry(self, name: str, arrays: Mapping[str, Any]) -> None:
    self._clear(os.path.join(self.directory, f"{name}.npz"))
    save_arrays(os.path.join(self.directory, f"{name}.npz"), arrays, {"name": name, "key": self.key})


def remove_entry(path: str) -> None:
  """Deletes a cache entry: a file, link, FIFO or device node is unlinked (a link's target is left alone),
  a real folder is removed with its contents."""
  try:
    mode = os.lstat(path).st_mode
  except FileNotFoundError:
    return
  if stat.S_ISDIR(mode):
    shutil.rmtree(path)
  else:
    os.unlink(path)


def _identity_text(fields: Mapping[str, Any]) -> str:
  parts = []
  if "lo" in fields:
    parts.append(f"seeds {fields['lo']}-{fields['hi']}")
  if "name" in fields:
    parts.append(f"entry {fields['name']!r}")
  if "key" in fields:
    parts.append(f"cache key {fields['key']}")
  return " of ".join(parts)
