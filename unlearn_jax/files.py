"""Careful file access: outputs that replace only regular files, bounded reads, ``.npz`` headers.

Everything the package writes goes through :func:`unlearn_jax.checkpoint.atomic_write_bytes`,
which replaces its target by a rename; :func:`refuse_special_target` keeps that rename off
anything that is not a regular file (a device such as ``/dev/null``, a FIFO, a folder, a
symbolic link), so running as root can never replace a system file with a table.

Reading: :func:`read_regular` opens a regular file only (never through a symbolic link,
never blocking on a FIFO) and refuses it when it is larger than a stated bound before a
byte is read. :func:`npz_members` reads the shape and dtype of every array in an ``.npz``
from its ``.npy`` headers, checked against the sizes the zip directory declares, so the
memory an archive would need is known before anything is decompressed.
:func:`available_memory` is the bound most size checks are stated against.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import stat
import zipfile
from typing import IO, Union

import numpy as np


class NotARegularFile(OSError):
  """An output path that exists and is not a regular file (device, FIFO, folder, symbolic link)."""

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else "not a regular file"


class BadFile(ValueError):
  """An input file refused before it is read: not a regular file, too large, or inconsistent headers."""


def kind_of(mode: int) -> str:
  """A file type in words, from an ``st_mode``."""
  for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                     (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                     (stat.S_ISREG, "regular file")):
    if test(mode):
      return name
  return "special file"


def refuse_special_target(path: str) -> None:
  """Raises :class:`NotARegularFile` when ``path`` exists and is not a regular file (links not followed).

  Outputs replace their target by a rename; a device, FIFO, folder or symbolic link at
  the path is refused rather than replaced (or written through), so ``--output /dev/null``
  run as root leaves ``/dev/null`` alone and a link is never silently swapped for a file.
  """
  try:
    st = os.lstat(path)
  except FileNotFoundError:
    return
  except OSError as err:
    raise OSError(err.errno, f"cannot write {path!r}: {err.strerror or err}") from None
  if not stat.S_ISREG(st.st_mode):
    raise NotARegularFile(f"refusing to write {path!r}: it is a {kind_of(st.st_mode)}, not a regular file "
                          f"(outputs only ever replace regular files; name another path)")


# What ``evaluate`` writes into its output folder.
RUN_OUTPUTS = ("results.json", "populations.npz", "epsilons.png", "confidences_best.png", "confidences_worst.png")


def check_output_folder(folder: str, names=RUN_OUTPUTS) -> None:
  """Before a run: ``folder`` must be a folder (or absent) and none of ``names`` in it a special file."""
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise NotARegularFile(f"output folder {folder!r} exists and is not a folder")
  for name in names:
    refuse_special_target(os.path.join(folder, name))


def _read_int(path: str) -> int | None:
  try:
    with open(path) as f:
      text = f.read(64).strip()
    return None if text == "max" else int(text)
  except (OSError, ValueError):
    return None


def available_memory() -> int:
  """Bytes this process can still allocate: ``MemAvailable``, lowered by a cgroup (v2) limit and ``RLIMIT_AS``."""
  avail = None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          avail = int(line.split()[1]) * 1024
          break
  except (OSError, ValueError, IndexError):
    pass
  if avail is None:
    try:
      avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
      avail = 2**63
  limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
  if limit is not None and used is not None:
    avail = min(avail, max(0, limit - used))
  try:
    import resource
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
      avail = min(avail, soft)
  except (ImportError, OSError, ValueError):
    pass
  return int(avail)


def size_text(num_bytes: float) -> str:
  """``1.5 GiB``-style text of a byte count."""
  for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if num_bytes >= scale:
      return f"{num_bytes / scale:.1f} {unit}"
  return f"{int(num_bytes)} bytes"


def open_regular(path: str, what: str = "file") -> int:
  """A read-only descriptor of ``path``, a regular file reached without following a final symbolic link.

  Opened non-blocking, so a FIFO is refused instead of waiting for a writer.
  Raises ``FileNotFoundError`` when absent, :class:`BadFile` when not a regular file.
  """
  st = os.lstat(path)
  if not stat.S_ISREG(st.st_mode):
    raise BadFile(f"{what} {path!r} is a {kind_of(st.st_mode)}, not a regular file")
  flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
  try:
    fd = os.open(path, flags)
  except OSError as err:
    if err.errno == errno.ELOOP:
      raise BadFile(f"{what} {path!r} is a symbolic link, not a regular file") from None
    raise
  st = os.fstat(fd)
  if not stat.S_ISREG(st.st_mode):  # swapped between lstat and open
    os.close(fd)
    raise BadFile(f"{what} {path!r} is a {kind_of(st.st_mode)}, not a regular file")
  return fd


def _check_size(fd: int, path: str, max_bytes: int, what: str) -> int:
  size = os.fstat(fd).st_size
  if size > max_bytes:
    raise BadFile(f"{what} {path!r} is {size_text(size)}, over the bound of {size_text(max_bytes)}; "
                  f"refusing to read it")
  return size


def open_bounded(path: str, max_bytes: int, what: str = "file") -> IO[bytes]:
  """Regular file ``path`` opened for binary reading (as :func:`open_regular`), refused (:class:`BadFile`)
  when larger than ``max_bytes``; for readers that take what they need piece by piece (an ``.npz``)."""
  fd = open_regular(path, what)
  try:
    _check_size(fd, path, max_bytes, what)
    return os.fdopen(fd, "rb")
  except BaseException:
    os.close(fd)
    raise


def read_regular(path: str, max_bytes: int, what: str = "file") -> bytes:
  """The bytes of regular file ``path``, refused (:class:`BadFile`) when larger than ``max_bytes``, before reading."""
  fd = open_regular(path, what)
  try:
    size = _check_size(fd, path, max_bytes, what)
    chunks, left = [], size
    with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
      while left > 0:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
          break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
  finally:
    os.close(fd)


@dataclasses.dataclass(frozen=True)
class Member:
  """One array of an ``.npz`` as its headers declare it (nothing decompressed beyond the ``.npy`` header)."""
  shape: tuple[int, ...]
  dtype: np.dtype
  file_size: int  # uncompressed bytes of the member, header included
  compress_size: int
  compressed: bool

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def nbytes(self) -> int:
    return self.size * self.dtype.itemsize


def npz_members(source: Union[str, IO[bytes]], where: str, require_stored: bool = False) -> dict[str, Member]:
  """Every array of an ``.npz`` (name without ``.npy``) with the shape and dtype its header declares.

  Each member's ``.npy`` header (a few hundred bytes) is the only data decompressed. The
  header's shape times the itemsize, plus the header, must equal the uncompressed size
  the zip directory records, so loading the member later allocates exactly what is
  declared here and the decompressor stops there (a zip bomb cannot grow past it).
  ``require_stored``: refuse compressed members (the package writes ``.npz`` files
  uncompressed, so any compression marks a foreign file).

  Raises:
    BadFile: not a zip archive, a member that is not an ``.npy`` array, a header that
      disagrees with the directory, a compressed member where none is expected.
  """
  from numpy.lib import format as npy

  out = {}
  try:
    with zipfile.ZipFile(source) as zf:
      for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        compressed = info.compress_type != zipfile.ZIP_STORED
        if require_stored and (compressed or info.compress_size != info.file_size):
          raise BadFile(f"{where}: member {info.filename!r} is compressed ({info.compress_size} bytes inflating to "
                        f"{info.file_size}); files of this kind are written uncompressed")
        with zf.open(info) as f:
          version = npy.read_magic(f)
          if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(f)
          elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(f)
          else:
            raise BadFile(f"{where}: member {info.filename!r} has .npy format version {version}, not 1.0 or 2.0")
          header = f.tell()
        shape = tuple(int(s) for s in shape)
        declared = header + math.prod(shape) * dtype.itemsize
        if not dtype.hasobject and declared != info.file_size:
          raise BadFile(f"{where}: member {info.filename!r} declares shape {shape} of {dtype} "
                        f"({size_text(declared)}) but the archive records {size_text(info.file_size)}: the file "
                        f"is damaged or crafted")
        out[name] = Member(shape, dtype, info.file_size, info.compress_size, compressed)
  except BadFile:
    raise
  except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError,
          RuntimeError) as err:
    raise BadFile(f"{where}: not a readable .npz archive ({type(err).__name__}: {' '.join(str(err).split())})") from None
  return out
