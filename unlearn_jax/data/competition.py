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
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; expected columns {list(REQUIRED_COLUMNS)}, "
                       f"found {columns}")
    rows = [(reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
            for row in reader]
  if not rows:
    raise ValueError(f"{path}: has a header but no rows")
  return rows


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
  except OSError as e:
    raise ValueError(f"{csv_path} line {line}: cannot read image {path!r}: {e}") from e


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
      an ``age_group`` is outside ``[0, 10)``, an image id repeats across
      retain and forget, or the images differ in size.
  """
  if data_dir is None:
    raise ValueError("dataset 'competition' needs data_dir: the folder holding retain.csv, forget.csv, "
                     "validation.csv and images/")
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"competition data_dir {data_dir!r} does not exist")
  root = os.path.realpath(data_dir)

  images, labels, persons, counts, ids = [], [], [], [], {}
  for name in FILES:
    path = os.path.join(data_dir, name)
    if os.path.commonpath([os.path.realpath(path), root]) != root:
      raise ValueError(f"competition file {path!r} is a link to {os.path.realpath(path)!r}, outside the data "
                       f"directory {root!r}; refusing to read it")
    rows = _read_csv(path)
    for line, row in rows:
      image_id, person = row["image_id"], row["person_id"]
      if not image_id:
        raise ValueError(f"{path} line {line}: column 'image_id' is empty")
      label = _parse_int(path, line, "age_group", row["age_group"])
      if not 0 <= label < NUM_AGE_GROUPS:
        raise ValueError(f"{path} line {line}: column 'age_group' must lie in [0, {NUM_AGE_GROUPS}), got {label}")
      if name != "validation.csv":
        if image_id in ids:
          raise ValueError(f"{path} line {line}: image_id {image_id!r} also appears in {ids[image_id]}")
        ids[image_id] = name
      candidates = _confined(_image_path(data_dir, image_id, person), root, path, line, image_id, person)
      file = next((c for c in candidates if os.path.isfile(c)), None)
      if file is None:
        raise FileNotFoundError(f"{path} line {line}: image file for image_id {image_id!r} not found "
                                f"(looked for {candidates})")
      image = _load_image(file, path, line)
      if images and image.shape != images[0].shape:
        raise ValueError(f"{path} line {line}: image {file!r} has shape {image.shape}, "
                         f"expected {images[0].shape} like the first image")
      images.append(image)
      labels.append(label)
      persons.append(person)
    counts.append(len(rows))

  try:
    groups = np.asarray([int(p) for p in persons], np.int64)
  except ValueError:  # non-numeric person ids: number them in sorted order
    groups = np.unique(np.asarray(persons), return_inverse=True)[1]
  if groups.min() < 0:
    raise ValueError(f"person_id values must be non-negative, got {groups.min()}")
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
