"""The Kaggle NeurIPS 2023 Machine Unlearning competition data layout.

The competition notebook reads ``retain.csv``, ``forget.csv`` and
``validation.csv`` from its input folder; each row is one face image with
columns ``image_id, person_id, age, age_group``. Images are 32×32 RGB PNGs under ``images/``.

Image file of a row (the first rule that applies):

1. ``image_id`` that contains a ``/`` or ends in an image extension is a path
   relative to ``data_dir`` (or, failing that, to ``data_dir/images``);
2. ``image_id`` of the form ``<person>_<n>`` is ``images/<person>/<n>.png``
   (our reading of the Kaggle layout: ids are the person id and the image's
   number within that person's folder, joined by ``_``);
3. otherwise ``images/<person_id>/<image_id>.png``.

Every candidate path is resolved (symlinks included) and must stay inside
``data_dir``: a row whose ``image_id`` or ``person_id`` points elsewhere
(``../x.png``, an absolute path, ``person_id=../..``, a symlink out of the
folder) is refused, naming the CSV file and line, before any file outside is
opened or even tested for existence. Images larger than PIL's decompression-bomb
limit (``PIL.Image.MAX_IMAGE_PIXELS``) are refused too.

An image's identity is its file: ``0_0`` and ``images/0/0.png`` (or a link to that
file) are one image, which may not be both forgotten and retained.

Conventions (as the organisers' ``original_model.pth`` expects): pixels stay
0–255 and are not normalised (``scale=1``, mean 0, std 1); the label is
``age_group`` (10 classes); the group id is ``person_id``. The training pool
is retain followed by forget, and ``forget_idx`` is the ``forget.csv`` rows, so
``SplitSpec(forget="source")`` reproduces the competition's forget set and
``forget="groups"`` draws whole people afresh. The competition's test set was
hidden, so ``validation.csv`` is returned as the held-out pool (``test_idx``,
``val_idx=None``): :func:`unlearn_jax.data.splits.heldout_split` divides it
person-disjointly into validation (the original's checkpoint choice) and test (the
reported accuracy) halves from the split seed, as the organizers kept separate
validation and test splits (:func:`heldout_pool`).
"""

from __future__ import annotations

import csv
import os
import warnings
from typing import Optional

import numpy as np

from unlearn_jax.data.dataset import Dataset

FILES = ("retain.csv", "forget.csv", "validation.csv")
REQUIRED_COLUMNS = ("image_id", "person_id", "age_group")
NUM_AGE_GROUPS = 10
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _read_csv(path: str) -> list[tuple[int, dict[str, str]]]:
  """``(line_number, row)`` pairs of ``path``, with the required columns checked."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"competition file {path!r} is missing")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    try:
      columns = [c.strip() for c in (reader.fieldnames or [])]
      missing = [c for c in REQUIRED_COLUMNS if c not in columns]
      if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected columns {list(REQUIRED_COLUMNS)}, "
                         f"found {columns}")
      rows = [(reader.line_num, {k.strip(): _cell(v) for k, v in row.items() if k is not None})
              for row in reader]
    except (csv.Error, UnicodeDecodeError) as err:
      raise _csv_error(path, reader.line_num, err) from None
  if not rows:
    raise ValueError(f"{path}: has a header but no rows")
  return rows


def _cell(value) -> str:
  """A CSV cell as stripped text (a row with extra cells gives a list under the ``None`` key, skipped)."""
  return (value or "").strip() if isinstance(value, str) or value is None else str(value)


def _csv_error(path: str, line: int, err: Exception) -> ValueError:
  """One line naming the CSV file and line for a decoding error (an over-long field, bad bytes, a stray quote)."""
  if isinstance(err, UnicodeDecodeError):
    return ValueError(f"{path} after line {line}: cannot read the CSV file: it is not text in the expected encoding "
                      f"({err.encoding})")
  # the reader counts a line once it is parsed: the failing one is the next
  return ValueError(f"{path} line {line + 1}: cannot read this CSV row: {' '.join(str(err).split())}")


def _parse_int(path: str, line: int, column: str, value: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{path} line {line}: column {column!r} must be an integer, got {value!r}") from None


def _image_path(data_dir: str, image_id: str, person: str) -> list[str]:
  """Candidate files for a row, in the order documented in the module docstring."""
  if "/" in image_id or image_id.lower().endswith(IMAGE_EXTENSIONS):
    return [os.path.join(data_dir, image_id), os.path.join(data_dir, "images", image_id)]
  head, sep, tail = image_id.partition("_")
  if sep and head and tail:
    return [os.path.join(data_dir, "images", head, tail + ".png")]
  return [os.path.join(data_dir, "images", person, image_id + ".png")]


def _confined(candidates: list[str], root: str, csv_path: str, line: int, image_id: str, person: str) -> list[str]:
  """``candidates`` resolved (symlinks followed); raises if one lies outside the resolved ``root``."""
  out = []
  for path in candidates:
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root:
      raise ValueError(f"{csv_path} line {line}: image_id {image_id!r} with person_id {person!r} points to "
                       f"{real!r}, outside the data directory {root!r}; refusing to read it")
    out.append(real)
  return out


def _load_image(path: str, csv_path: str, line: int) -> np.ndarray:
  from PIL import Image

  try:
    with warnings.catch_warnings():  # over MAX_IMAGE_PIXELS PIL only warns; refuse instead
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ValueError(f"{csv_path} line {line}: image {path!r} is too large to load "
                     f"({' '.join(str(e).split())})") from None
  except MemoryError:
    raise
  except Exception as e:  # PIL raises OSError, SyntaxError (a broken PNG chunk), ValueError, struct.error, ...
    raise ValueError(f"{csv_path} line {line}: cannot read image {path!r}: {_reason(e)}") from e


def _reason(err: Exception) -> str:
  text = " ".join(str(err).split())
  return f"{type(err).__name__}: {text}" if text else type(err).__name__


# The decoded images of all three CSV files (uint8 H x W x 3 each) must fit in this share of the available
# memory; checked from the first image's header, before any pixel is decoded (every image must share its size).
MEMORY_SHARE = 0.25


def _check_image_header(file: str, csv_path: str, line: int, expected: Optional[tuple[int, ...]],
                        total_rows: int) -> None:
  """Reads only the header of ``file``: its size must equal the first image's; at the first image, the
  decoded size of the whole folder (``total_rows`` images of this size) is checked against the memory."""
  from PIL import Image

  from unlearn_jax import files
  try:
    with warnings.catch_warnings():  # over MAX_IMAGE_PIXELS PIL only warns; refuse instead
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(file) as im:
        width, height = (int(v) for v in im.size)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ValueError(f"{csv_path} line {line}: image {file!r} is too large to load "
                     f"({' '.join(str(e).split())})") from None
  except MemoryError:
    raise
  except Exception as e:
    raise ValueError(f"{csv_path} line {line}: cannot read image {file!r}: {_reason(e)}") from None
  shape = (height, width, 3)
  if expected is not None:
    if shape != tuple(expected):
      raise ValueError(f"{csv_path} line {line}: image {file!r} has shape {shape}, "
                       f"expected {tuple(expected)} like the first image")
    return
  need = total_rows * height * width * 3 + height * width * 8  # plus one image's decoding temporaries
  bound = int(files.available_memory() * MEMORY_SHARE)
  if need > bound:
    raise ValueError(f"{csv_path} line {line}: image {file!r} is {width}x{height} pixels; the {total_rows} images "
                     f"the CSV files list, all of that size, take {files.size_text(need)} decoded, over the bound "
                     f"of {files.size_text(bound)} ({MEMORY_SHARE:g} of the available memory); refusing to decode "
                     f"them")


def _claim_image(ids: dict, file: str, root: str, name: str, csv_path: str, line: int, image_id: str) -> None:
  """Records ``file`` as named by this retain/forget row; refuses an image named twice, however spelled.

  An image's identity is its file (device and inode of the resolved path), so ``0_0``,
  ``images/0/0.png``, ``0/0.png`` and a link to the same file are one image.
  """
  st = os.stat(file)
  key = (st.st_dev, st.st_ino)
  if key in ids:
    prev_name, prev_line, prev_id = ids[key]
    rule = ("an image cannot be both forgotten and retained" if prev_name != name else
            "each image is listed once")
    raise ValueError(f"{csv_path} line {line}: image_id {image_id!r} also appears in {prev_name} (line "
                     f"{prev_line}, as {prev_id!r}): both name the image {os.path.relpath(file, root)!r}; {rule}")
  ids[key] = (name, line, image_id)


# person_id is stored as int32 group ids.
MAX_PERSON_ID = 2**31 - 1


def _person_groups(persons: list[str], wheres: list[tuple[str, int]]) -> np.ndarray:
  """Group ids of the rows: integer ``person_id`` values as they are (each checked to lie in
  ``[0, MAX_PERSON_ID]``, never wrapped), or, when some are not integers, all of them numbered
  in sorted order of their text."""
  values = []
  for person, (path, line) in zip(persons, wheres):
    try:
      value = int(person)
    except ValueError:  # non-numeric person ids: number them in sorted order
      return np.unique(np.asarray(persons), return_inverse=True)[1].astype(np.int64)
    if not 0 <= value <= MAX_PERSON_ID:
      raise ValueError(f"{path} line {line}: column 'person_id' must be an integer in [0, {MAX_PERSON_ID}], "
                       f"got {person}")
    values.append(value)
  return np.asarray(values, np.int64)


def heldout_pool(n_train: int, n_validation: int) -> tuple[None, np.ndarray]:
  """``(val_idx, test_idx)`` of the Dataset: no fixed validation split; ``validation.csv``'s rows
  (after the training pool) form the held-out pool that the split divides by person."""
  return None, np.arange(n_train, n_train + n_validation)


def load_competition(data_dir: Optional[str]) -> Dataset:
  """Loads the competition's retain/forget/validation CSVs and images from ``data_dir``.

  Returns:
    A :class:`Dataset` ordered retain, forget, validation, with
    ``forget_idx`` the forget rows, ``test_idx`` the validation rows (the held-out pool)
    and ``val_idx`` ``None``.

  Raises:
    FileNotFoundError: ``data_dir``, a CSV or an image file is missing.
    ValueError: a row's image path leaves ``data_dir``, an image exceeds
      PIL's pixel limit, a CSV lacks a column, has no rows or a non-integer value,
      an ``age_group`` is outside ``[0, 10)``, a ``person_id`` outside
      ``[0, MAX_PERSON_ID]``, one image (its file, however its id is spelled)
      is listed twice in retain and forget, a CSV row or an image cannot be
      decoded, the images differ in size, or all of them decoded would exceed
      :data:`MEMORY_SHARE` of the available memory (checked from the headers).
  """
  if data_dir is None:
    raise ValueError("dataset 'competition' needs data_dir: the folder holding retain.csv, forget.csv, "
                     "validation.csv and images/")
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"competition data_dir {data_dir!r} does not exist")
  root = os.path.realpath(data_dir)

  images, labels, persons, counts, ids = [], [], [], [], {}
  wheres, tables = [], []
  for name in FILES:
    path = os.path.join(data_dir, name)
    if os.path.commonpath([os.path.realpath(path), root]) != root:
      raise ValueError(f"competition file {path!r} is a link to {os.path.realpath(path)!r}, outside the data "
                       f"directory {root!r}; refusing to read it")
    tables.append((name, path, _read_csv(path)))
  total_rows = sum(len(rows) for _, _, rows in tables)
  for name, path, rows in tables:
    for line, row in rows:
      image_id, person = row["image_id"], row["person_id"]
      if not image_id:
        raise ValueError(f"{path} line {line}: column 'image_id' is empty")
      label = _parse_int(path, line, "age_group", row["age_group"])
      if not 0 <= label < NUM_AGE_GROUPS:
        raise ValueError(f"{path} line {line}: column 'age_group' must lie in [0, {NUM_AGE_GROUPS}), got {label}")
      candidates = _confined(_image_path(data_dir, image_id, person), root, path, line, image_id, person)
      file = next((c for c in candidates if os.path.isfile(c)), None)
      if file is None:
        raise FileNotFoundError(f"{path} line {line}: image file for image_id {image_id!r} not found "
                                f"(looked for {candidates})")
      if name != "validation.csv":
        _claim_image(ids, file, root, name, path, line, image_id)
      _check_image_header(file, path, line, images[0].shape if images else None, total_rows)
      image = _load_image(file, path, line)
      if images and image.shape != images[0].shape:
        raise ValueError(f"{path} line {line}: image {file!r} has shape {image.shape}, "
                         f"expected {images[0].shape} like the first image")
      images.append(image)
      labels.append(label)
      persons.append(person)
      wheres.append((path, line))
    counts.append(len(rows))

  groups = _person_groups(persons, wheres)
  n_retain, n_forget, n_val = counts
  n_train = n_retain + n_forget
  val, test = heldout_pool(n_train, n_val)
  return Dataset(
      name="competition",
      images=np.stack(images),
      labels=np.asarray(labels, np.int32),
      groups=groups.astype(np.int32),
      num_classes=NUM_AGE_GROUPS,
      train_idx=np.arange(n_train),
      test_idx=test,
      val_idx=val,
      forget_idx=np.arange(n_retain, n_train),
      scale=1.0,
      mean=(0.0, 0.0, 0.0),
      std=(1.0, 1.0, 1.0),
  )
