"""Forget / retain / validation / test index sets, all drawn from one seed.

Forget-set modes:

* ``"random"``: a random ``fraction`` of the training pool;
* ``"groups"``: every training example of ``num_groups`` randomly chosen
  groups (the competition forgot every image of 15 people), so no group is
  split between forget and retain;
* ``"classes"``: every training example of the given ``classes`` (or of
  ``num_classes`` randomly chosen classes);
* ``"source"``: the forget set the source itself defines (e.g. ``forget.csv``).

Validation and test come from the source's held-out pool: a source-defined
validation split is used as is; otherwise the held-out pool is split by
``validation_fraction`` (the CIFAR-10 kit splits its test set 50/50), drawn from
``seed``. When every held-out example carries a group id (a person, as in the
competition's ``validation.csv``) the split is *group-disjoint*: whole people go
to validation until it holds the share of images closest to ``validation_fraction``,
the rest to test, so no person's images inform both the original's checkpoint
choice and the reported test accuracy (:func:`heldout_split`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from unlearn_jax import _validate
from unlearn_jax.data.dataset import Dataset, SplitData, to_device

FORGET_MODES = ("random", "groups", "classes", "source")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
  """How to split a dataset; hashable, so it can key a cache."""

  forget: str = "random"
  fraction: float = 0.1
  num_groups: int = 15
  classes: Optional[tuple[int, ...]] = None
  num_forget_classes: int = 1
  validation_fraction: float = 0.5
  seed: int = 0

  def describe(self) -> str:
    if self.forget == "random":
      return f"random{self.fraction:g}-s{self.seed}"
    if self.forget == "groups":
      return f"groups{self.num_groups}-s{self.seed}"
    if self.forget == "classes":
      cls = "_".join(map(str, self.classes)) if self.classes else f"n{self.num_forget_classes}"
      return f"classes{cls}-s{self.seed}"
    return f"source-s{self.seed}"


def forget_indices(dataset: Dataset, spec: SplitSpec) -> np.ndarray:
  """Sorted indices (into ``dataset``) of the forget set."""
  _validate.check_in("forget mode", spec.forget, FORGET_MODES)
  rng = np.random.default_rng(spec.seed)
  train = np.asarray(dataset.train_idx)
  if spec.forget == "random":
    _validate.check_fraction("forget fraction", spec.fraction)
    count = int(round(spec.fraction * len(train)))
    chosen = rng.choice(train, size=count, replace=False) if count else train[:0]
  elif spec.forget == "groups":
    groups = dataset.groups[train]
    if (groups < 0).all():
      raise ValueError(f"dataset {dataset.name!r} has no group ids; forget mode 'groups' needs them")
    unique = np.unique(groups[groups >= 0])
    _validate.check_positive_int("num_groups", spec.num_groups)
    if spec.num_groups >= len(unique):
      raise ValueError(
          f"num_groups must be smaller than the number of groups in train ({len(unique)}), got {spec.num_groups}")
    picked = rng.choice(unique, size=spec.num_groups, replace=False)
    chosen = train[np.isin(groups, picked)]
  elif spec.forget == "classes":
    if spec.classes is not None:
      classes = np.asarray(spec.classes)
      bad = classes[(classes < 0) | (classes >= dataset.num_classes)]
      if bad.size:
        raise ValueError(f"forget classes must lie in [0, {dataset.num_classes}), got {bad.tolist()}")
    else:
      _validate.check_positive_int("num_forget_classes", spec.num_forget_classes)
      if spec.num_forget_classes >= dataset.num_classes:
        raise ValueError(
            f"num_forget_classes must be below num_classes={dataset.num_classes}, got {spec.num_forget_classes}")
      classes = rng.choice(dataset.num_classes, size=spec.num_forget_classes, replace=False)
    chosen = train[np.isin(dataset.labels[train], classes)]
  else:
    if dataset.forget_idx is None:
      raise ValueError(f"dataset {dataset.name!r} defines no forget set; use forget mode random, groups or classes")
    chosen = np.unique(np.asarray(dataset.forget_idx))
    outside = chosen[~np.isin(chosen, train)]
    if outside.size:
      raise ValueError(f"dataset {dataset.name!r} defines forget indices outside its training pool, "
                       f"e.g. {outside[:5].tolist()}")
  chosen = np.sort(np.asarray(chosen, dtype=np.int64))
  if chosen.size == 0:
    raise ValueError(f"forget set is empty (mode {spec.forget!r} on dataset {dataset.name!r})")
  if chosen.size >= len(train):
    raise ValueError(
        f"forget set equals the whole training set ({chosen.size} examples); nothing would be retained")
  return chosen


def heldout_split(dataset: Dataset, spec: SplitSpec) -> tuple[np.ndarray, np.ndarray]:
  """``(validation, test)`` sorted indices: the held-out pool split by ``spec.validation_fraction``
  from ``spec.seed``; group-disjoint when every held-out example has a group id (>= 0)."""
  _validate.check_fraction("validation_fraction", spec.validation_fraction)
  rng = np.random.default_rng([spec.seed, 1])
  pool = np.asarray(dataset.test_idx)
  groups = np.asarray(dataset.groups)[pool]
  if pool.size == 0 or (groups < 0).any():
    held = rng.permutation(pool)
    n_val = int(round(spec.validation_fraction * len(held)))
    return np.sort(held[:n_val]), np.sort(held[n_val:])
  people, counts = np.unique(groups, return_counts=True)
  if len(people) < 2:
    raise ValueError(f"the held-out pool of dataset {dataset.name!r} has {len(people)} group(s); a group-disjoint "
                     f"validation/test split needs at least 2")
  order = rng.permutation(len(people))
  cum = np.cumsum(counts[order])[:-1]  # images in validation when it takes the first k people, k = 1..P-1
  k = 1 + int(np.argmin(np.abs(cum - spec.validation_fraction * len(pool))))
  in_val = np.isin(groups, people[order[:k]])
  return np.sort(pool[in_val]), np.sort(pool[~in_val])


def group_counts(groups: np.ndarray, indices: dict[str, np.ndarray]) -> Optional[dict[str, int]]:
  """Distinct groups (people) per split and the overlaps that must be empty for whole-person
  splits (``None`` when the data has no group ids)."""
  groups = np.asarray(groups)
  if (groups < 0).all():
    return None
  sets = {k: set(groups[np.asarray(v)].tolist()) - {-1} for k, v in indices.items()}
  out = {f"{k}_people": len(v) for k, v in sets.items()}
  out["forget_people_in_retain"] = len(sets["forget"] & sets["retain"])
  out["validation_people_in_test"] = len(sets["validation"] & sets["test"])
  return out


def make_splits(dataset: Dataset, spec: SplitSpec = SplitSpec()) -> tuple[dict[str, np.ndarray], SplitData]:
  """Computes the split index sets and places everything on device.

  Returns:
    ``(indices, data)``: a dict of host index arrays (retain, forget,
    validation, test) and the device-resident :class:`SplitData`.
  """
  forget = forget_indices(dataset, spec)
  train = np.asarray(dataset.train_idx)
  retain = np.setdiff1d(train, forget)
  if dataset.val_idx is not None:
    validation = np.asarray(dataset.val_idx)
    test = np.asarray(dataset.test_idx)
  else:
    validation, test = heldout_split(dataset, spec)
  for name, idx in (("validation", validation), ("test", test)):
    if len(idx) == 0:
      raise ValueError(f"{name} split of dataset {dataset.name!r} is empty")
  indices = dict(retain=retain, forget=forget, validation=validation, test=test)
  return indices, to_device(dataset, **indices)
