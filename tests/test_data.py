"""Data sources, split index sets and on-device normalisation.

Every source is exercised offline: ``digits`` on its real embedded data,
the tensorflow-datasets loaders under ``tfds.testing.mock_data`` (random
examples served through the real ``as_data_source`` path, no TensorFlow), and
the CIFAR-10 archive and competition folder on miniature copies written here
in the original on-disk formats (the CIFAR batches as Python 2 pickled them).
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from tests.helpers import py2_pickle, write_cifar, write_competition
from unlearn_jax.data import Dataset, SOURCES, SplitSpec, forget_indices, load_dataset, make_splits

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


# ---------------------------------------------------------------------------
# Builders of small on-disk datasets in the sources' native formats.


def _hwc(data_row):
  """Naive CHW-row -> HWC conversion, pixel by pixel."""
  out = np.zeros((32, 32, 3), np.uint8)
  for ch in range(3):
    for r in range(32):
      for c in range(32):
        out[r, c, ch] = data_row[ch * 1024 + r * 32 + c]
  return out


def _rewrite_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _synthetic(n=200, n_groups=20, num_classes=5, train_classes=None, seed=0):
  """A small in-memory dataset with group ids (people) and a 150/50 train/held-out pool."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n).astype(np.int32)
  if train_classes is not None:  # restrict the training pool's labels
    labels[:150] = rng.choice(train_classes, 150)
  return Dataset(name="synthetic", images=rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), labels=labels,
                 groups=rng.integers(0, n_groups, n).astype(np.int32), num_classes=num_classes,
                 train_idx=np.arange(150), test_idx=np.arange(150, n), scale=1 / 255, mean=(0.5, 0.4, 0.3),
                 std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def digits():
  return load_dataset("digits")


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("competition"))
  rows = write_competition(root, np.random.default_rng(1))
  return root, rows


# ---------------------------------------------------------------------------
# Sources.


def test_registry_and_unknown_dataset():
  assert {"digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped", "cifar10_tarball",
          "competition"} <= set(SOURCES)
  with pytest.raises(ValueError, match=r"unknown dataset 'imagenet_tiny'.*digits"):
    load_dataset("imagenet_tiny")


def test_digits_is_the_real_embedded_data(digits):
  from sklearn.datasets import load_digits as sk_digits

  bunch = sk_digits()
  assert digits.images.shape == (1797, 8, 8, 1)
  np.testing.assert_array_equal(digits.images[..., 0], bunch.images.astype(np.uint8))
  np.testing.assert_array_equal(digits.labels, bunch.target)
  assert digits.images.max() == 16 and digits.num_classes == 10
  assert np.bincount(digits.labels).min() >= 170  # all ten digits, roughly balanced
  train, test = set(digits.train_idx.tolist()), set(digits.test_idx.tolist())
  assert len(test) == 359 and not train & test and train | test == set(range(1797))


def test_tfds_sources_read_through_data_source_under_mock():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=7):
    ds = load_dataset("cifar10")
    train_src = tfds.data_source("cifar10", split="train")
    test_src = tfds.data_source("cifar10", split="test")
    expect = [train_src[i] for i in range(7)] + [test_src[i] for i in range(7)]
    mnist = load_dataset("mnist")
    c100 = load_dataset("tfds:cifar100")
  assert ds.images.shape == (14, 32, 32, 3) and ds.images.dtype == np.uint8
  np.testing.assert_array_equal(ds.images, np.stack([e["image"] for e in expect]))
  np.testing.assert_array_equal(ds.labels, [int(e["label"]) for e in expect])
  np.testing.assert_array_equal(ds.train_idx, np.arange(7))
  np.testing.assert_array_equal(ds.test_idx, np.arange(7, 14))
  assert ds.scale == pytest.approx(1 / 255) and ds.mean == CIFAR_MEAN and ds.std == CIFAR_STD
  assert (ds.groups == -1).all() and ds.val_idx is None and ds.num_classes == 10
  assert mnist.images.shape == (14, 28, 28, 1) and mnist.mean == (0.1307,)
  assert c100.num_classes == 100 and c100.name == "cifar100"
  idx, data = make_splits(ds, SplitSpec(fraction=0.3))
  assert len(idx["forget"]) == 2 and len(idx["retain"]) == 5
  assert sorted(np.concatenate([idx["validation"], idx["test"]]).tolist()) == list(range(7, 14))


def test_tfds_missing_or_unprepared_data_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds data_dir .* does not exist"):
    load_dataset("cifar10", str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match=r"'mnist' split 'train' is not prepared in array_record format"):
    load_dataset("mnist", str(tmp_path))
  with pytest.raises(ValueError, match="unknown tfds dataset 'no_such_dataset_xyz'"):
    load_dataset("tfds:no_such_dataset_xyz", str(tmp_path))


@pytest.mark.parametrize("layout", ["tar", "tar_dir", "dir", "dir_parent"])
def test_cifar10_tarball_layouts(tmp_path, layout):
  rng = np.random.default_rng(2)
  path, batches = write_cifar(str(tmp_path), rng, layout="dir" if layout.startswith("dir") else "tar")
  if layout in ("tar_dir", "dir_parent"):
    path = os.path.dirname(path)
  ds = load_dataset("cifar10_tarball", path)
  order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  rows = np.concatenate([batches[b][b"data"] for b in order])
  assert ds.images.shape == (38, 32, 32, 3) and ds.images.dtype == np.uint8
  for i in (0, 7, 29, 30, 37):  # first, inside batch 2, last train, first and last test
    np.testing.assert_array_equal(ds.images[i], _hwc(rows[i]))
  np.testing.assert_array_equal(ds.labels, np.concatenate([batches[b][b"labels"] for b in order]))
  np.testing.assert_array_equal(ds.train_idx, np.arange(30))
  np.testing.assert_array_equal(ds.test_idx, np.arange(30, 38))
  assert ds.forget_idx is None and ds.mean == CIFAR_MEAN and ds.std == CIFAR_STD


def test_cifar10_tarball_forget_idx_file_is_the_source_forget_set(tmp_path):
  archive, _ = write_cifar(str(tmp_path), np.random.default_rng(3))
  np.save(tmp_path / "forget_idx.npy", np.array([4, 0, 17]))
  ds = load_dataset("cifar10_tarball", archive)
  idx, _ = make_splits(ds, SplitSpec(forget="source"))
  np.testing.assert_array_equal(idx["forget"], [0, 4, 17])
  np.testing.assert_array_equal(idx["retain"], np.setdiff1d(np.arange(30), [0, 4, 17]))
  np.save(tmp_path / "forget_idx.npy", np.array([3, 30]))  # 30 is a test image
  with pytest.raises(ValueError, match=r"forget_idx.npy: forget indices must be a non-empty subset of \[0, 30\)"):
    load_dataset("cifar10_tarball", archive)


def test_cifar10_tarball_errors(tmp_path):
  with pytest.raises(ValueError, match="'cifar10_tarball' needs data_dir"):
    load_dataset("cifar10_tarball", None)
  with pytest.raises(FileNotFoundError, match="CIFAR-10 path .*missing_dir.* does not exist"):
    load_dataset("cifar10_tarball", str(tmp_path / "missing_dir"))
  with pytest.raises(FileNotFoundError, match="no CIFAR-10 data in .*expected cifar-10-python.tar.gz"):
    load_dataset("cifar10_tarball", str(tmp_path))
  folder, _ = write_cifar(str(tmp_path), np.random.default_rng(4), layout="dir")
  with open(os.path.join(folder, "data_batch_3"), "wb") as f:
    f.write(py2_pickle({b"data": np.zeros((2, 3072), np.uint8)}))
  with pytest.raises(ValueError, match="data_batch_3 has no 'labels' entry"):
    load_dataset("cifar10_tarball", folder)
  os.remove(os.path.join(folder, "data_batch_3"))
  with pytest.raises(FileNotFoundError, match="data_batch_3.* is missing"):
    load_dataset("cifar10_tarball", folder)


def test_competition_loads_images_labels_people(competition):
  root, rows = competition
  ds = load_dataset("competition", root)
  all_rows = rows["retain.csv"] + rows["forget.csv"] + rows["validation.csv"]
  assert ds.images.shape == (30, 32, 32, 3) and ds.num_classes == 10
  np.testing.assert_array_equal(ds.images, np.stack([r[3] for r in all_rows]))
  np.testing.assert_array_equal(ds.labels, [r[2] for r in all_rows])
  np.testing.assert_array_equal(ds.groups, [r[1] for r in all_rows])
  np.testing.assert_array_equal(ds.train_idx, np.arange(24))
  np.testing.assert_array_equal(ds.forget_idx, np.arange(18, 24))
  assert ds.val_idx is None  # no public test set: validation.csv is the held-out pool, split by person
  np.testing.assert_array_equal(ds.test_idx, np.arange(24, 30))
  idx, data = make_splits(ds, SplitSpec(forget="source"))
  assert set(ds.groups[idx["forget"]].tolist()) == {6, 7}
  assert set(ds.groups[idx["retain"]].tolist()) == set(range(6))
  x, y = data.gather(data.forget)  # raw 0..255 pixels, no normalisation
  np.testing.assert_array_equal(np.asarray(x), np.stack([r[3] for r in rows["forget.csv"]]).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(y), [r[2] for r in rows["forget.csv"]])
  idx, _ = make_splits(ds, SplitSpec(forget="groups", num_groups=3, seed=5))
  assert len(set(ds.groups[idx["forget"]].tolist())) == 3
  assert not set(ds.groups[idx["forget"]].tolist()) & set(ds.groups[idx["retain"]].tolist())


def test_competition_accepts_relative_path_ids(tmp_path):
  rows = write_competition(str(tmp_path), np.random.default_rng(6), id_style="path")
  ds = load_dataset("competition", str(tmp_path))
  np.testing.assert_array_equal(ds.images[18], rows["forget.csv"][0][3])


def _corrupt(root, name, header, rows):
  _rewrite_csv(os.path.join(root, name), header, rows)


HEADER = ["image_id", "person_id", "age", "age_group"]


@pytest.mark.parametrize("case, error, message", [
    ("missing_column", ValueError, r"forget.csv: missing column\(s\) \['age_group'\]"),
    ("non_integer", ValueError, r"retain.csv line 3: column 'age_group' must be an integer, got 'young'"),
    ("out_of_range", ValueError, r"validation.csv line 2: column 'age_group' must lie in \[0, 10\), got 12"),
    ("empty", ValueError, "forget.csv: has a header but no rows"),
    ("missing_image", FileNotFoundError, r"retain.csv line 2: image file for image_id '0_9' not found"),
    ("missing_csv", FileNotFoundError, "competition file .*validation.csv' is missing"),
    ("duplicate", ValueError, r"forget.csv line 2: image_id '0_0' also appears in retain.csv"),
])
def test_competition_malformed_inputs(tmp_path, case, error, message):
  root = str(tmp_path)
  rows = write_competition(root, np.random.default_rng(7))
  plain = {name: [[r[0], r[1], 20, r[2]] for r in rs] for name, rs in rows.items()}
  if case == "missing_column":
    _corrupt(root, "forget.csv", HEADER[:3], [r[:3] for r in plain["forget.csv"]])
  elif case == "non_integer":
    plain["retain.csv"][1][3] = "young"
    _corrupt(root, "retain.csv", HEADER, plain["retain.csv"])
  elif case == "out_of_range":
    plain["validation.csv"][0][3] = 12
    _corrupt(root, "validation.csv", HEADER, plain["validation.csv"])
  elif case == "empty":
    _corrupt(root, "forget.csv", HEADER, [])
  elif case == "missing_image":
    plain["retain.csv"][0][0] = "0_9"
    _corrupt(root, "retain.csv", HEADER, plain["retain.csv"])
  elif case == "missing_csv":
    os.remove(os.path.join(root, "validation.csv"))
  elif case == "duplicate":
    plain["forget.csv"][0][0] = "0_0"
    _corrupt(root, "forget.csv", HEADER, plain["forget.csv"])
  with pytest.raises(error, match=message):
    load_dataset("competition", root)


def test_competition_needs_an_existing_dir(tmp_path):
  with pytest.raises(ValueError, match="'competition' needs data_dir"):
    load_dataset("competition", None)
  with pytest.raises(FileNotFoundError, match="competition data_dir .*absent.* does not exist"):
    load_dataset("competition", str(tmp_path / "absent"))


# ---------------------------------------------------------------------------
# Splits.


def _check_partition(ds, idx):
  train, held = set(ds.train_idx.tolist()), set(ds.test_idx.tolist())
  retain, forget = set(idx["retain"].tolist()), set(idx["forget"].tolist())
  val, test = set(idx["validation"].tolist()), set(idx["test"].tolist())
  assert len(retain) == len(idx["retain"]) and len(forget) == len(idx["forget"])
  assert not retain & forget and retain | forget == train
  assert not val & test and val | test == held
  assert not (retain | forget) & (val | test)


def test_random_fraction_size_determinism_and_partition(digits):
  idx0, data = make_splits(digits, SplitSpec(fraction=0.1, seed=0))
  assert len(idx0["forget"]) == round(0.1 * 1438) == 144
  _check_partition(digits, idx0)
  assert len(idx0["validation"]) == 180 and len(idx0["test"]) == 179
  for name in ("retain", "forget", "validation", "test"):
    np.testing.assert_array_equal(np.asarray(data.split(name)), idx0[name])
  again = forget_indices(digits, SplitSpec(fraction=0.1, seed=0))
  other = forget_indices(digits, SplitSpec(fraction=0.1, seed=1))
  np.testing.assert_array_equal(again, idx0["forget"])
  assert len(other) == 144 and len(np.intersect1d(other, again)) < 72  # ~10% overlap expected


def test_forget_by_class_takes_all_and_only_that_class(digits):
  idx, _ = make_splits(digits, SplitSpec(forget="classes", classes=(3,)))
  expected = digits.train_idx[digits.labels[digits.train_idx] == 3]
  np.testing.assert_array_equal(idx["forget"], expected)
  assert (digits.labels[idx["retain"]] != 3).all()
  assert (digits.labels[idx["test"]] == 3).any()  # the held-out pool keeps the class
  _check_partition(digits, idx)
  picked = forget_indices(digits, SplitSpec(forget="classes", num_forget_classes=2, seed=4))
  classes = np.unique(digits.labels[picked])
  assert len(classes) == 2
  np.testing.assert_array_equal(picked, digits.train_idx[np.isin(digits.labels[digits.train_idx], classes)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forget_by_group_never_splits_a_group(seed):
  ds = _synthetic()
  idx, _ = make_splits(ds, SplitSpec(forget="groups", num_groups=4, seed=seed))
  forget_groups = set(ds.groups[idx["forget"]].tolist())
  assert len(forget_groups) == 4
  assert not forget_groups & set(ds.groups[idx["retain"]].tolist())
  train_of_groups = [i for i in ds.train_idx if ds.groups[i] in forget_groups]
  np.testing.assert_array_equal(idx["forget"], train_of_groups)
  _check_partition(ds, idx)


@pytest.mark.parametrize("source", ["digits", "synthetic"])
def test_gather_normalises_like_numpy(digits, source):
  ds = digits if source == "digits" else _synthetic()
  _, data = make_splits(ds, SplitSpec(fraction=0.2))
  picks = np.asarray(data.retain)[[0, 5, 9]]
  x, y = data.gather(data.retain[np.array([0, 5, 9])])
  mean = np.asarray(ds.mean, np.float64).reshape(1, 1, 1, -1)
  std = np.asarray(ds.std, np.float64).reshape(1, 1, 1, -1)
  expected = (ds.images[picks].astype(np.float64) * ds.scale - mean) / std
  assert x.dtype == np.float32 and x.shape == (3,) + ds.image_shape
  np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(y), ds.labels[picks])


@pytest.mark.parametrize("spec, message", [
    (SplitSpec(fraction=0.0), "forget fraction must lie strictly between 0 and 1, got 0.0"),
    (SplitSpec(fraction=1.0), "forget fraction must lie strictly between 0 and 1, got 1.0"),
    (SplitSpec(fraction=-0.2), "forget fraction must lie strictly between 0 and 1, got -0.2"),
    (SplitSpec(fraction=1e-5), r"forget set is empty \(mode 'random'"),
    (SplitSpec(forget="classes", classes=tuple(range(10))), "forget set equals the whole training set"),
    (SplitSpec(forget="classes", classes=(10,)), r"forget classes must lie in \[0, 10\), got \[10\]"),
    (SplitSpec(forget="classes", num_forget_classes=10), "num_forget_classes must be below num_classes=10"),
    (SplitSpec(forget="groups"), "dataset 'digits' has no group ids"),
    (SplitSpec(forget="source"), "dataset 'digits' defines no forget set"),
    (SplitSpec(forget="people"), "unknown forget mode 'people'"),
    (SplitSpec(validation_fraction=1.0), "validation_fraction must lie strictly between 0 and 1"),
])
def test_bad_split_specs_name_the_problem(digits, spec, message):
  with pytest.raises(ValueError, match=message):
    make_splits(digits, spec)


def test_bad_splits_on_datasets_with_groups_or_missing_classes():
  absent = _synthetic(train_classes=[0, 1, 2])  # classes 3 and 4 only in the held-out pool
  with pytest.raises(ValueError, match=r"forget set is empty \(mode 'classes' on dataset 'synthetic'\)"):
    forget_indices(absent, SplitSpec(forget="classes", classes=(3, 4)))
  with pytest.raises(ValueError, match=r"num_groups must be smaller than the number of groups in train \(20\)"):
    forget_indices(_synthetic(), SplitSpec(forget="groups", num_groups=20))
  outside = Dataset(**{**absent.__dict__, "forget_idx": np.array([3, 160])})
  with pytest.raises(ValueError, match=r"forget indices outside its training pool, e.g. \[160\]"):
    forget_indices(outside, SplitSpec(forget="source"))
