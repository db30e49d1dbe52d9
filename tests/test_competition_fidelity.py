"""The competition entries' schedules and batch orders against plain-Python transcriptions of their sources.

* ``kookmin``: the entry's ``LinearAnnealingLR`` (a torch ``_LRScheduler`` stepped once per
  epoch, ``num_annealing_steps=(E+1)//2``, ``num_total_steps=E+1``), transcribed with torch's
  step-count mechanics (the constructor takes the first step);
* ``neggrad_plus``: ``zip(retain_loader, itertools.cycle(forget_loader))`` over loaders with
  ``drop_last=False``, the real ``itertools.cycle`` on plain lists;
* ``seif``: the ``author`` and ``balanced`` class weights against hand-computed scikit-learn
  ``compute_class_weight("balanced")`` values.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import small_digits
from unlearn_jax.models import get_model
from unlearn_jax.training import steps
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import ModelState, SetSizes, kookmin, neggrad_plus, seif


# ---------------------------------------------------------------- kookmin


class _TranscribedLinearAnnealingLR:
  """The entry's scheduler with torch's bookkeeping: ``__init__`` calls ``step()`` once, and
  ``step()`` increments ``_step_count`` and then sets the lr from ``get_lr()``."""

  def __init__(self, base_lr, num_annealing_steps, num_total_steps):
    self.base_lr = base_lr
    self.num_annealing_steps = num_annealing_steps
    self.num_total_steps = num_total_steps
    self._step_count = 0
    self.lr = None
    self.step()

  def get_lr(self):
    if self._step_count <= self.num_annealing_steps:
      return self.base_lr * self._step_count / self.num_annealing_steps
    return (self.base_lr * (self.num_total_steps - self._step_count)
            / (self.num_total_steps - self.num_annealing_steps))

  def step(self):
    self._step_count += 1
    self.lr = self.get_lr()


def _entry_epoch_lrs(epochs: int) -> list[float]:
  sched = _TranscribedLinearAnnealingLR(1.0, (epochs + 1) // 2, epochs + 1)
  lrs = []
  for _ in range(epochs):  # the entry: train one epoch at the current lr, then scheduler.step()
    lrs.append(sched.lr)
    sched.step()
  return lrs


@pytest.mark.parametrize("epochs", range(1, 9))
def test_kookmin_factors_equal_the_entrys_linear_annealing_lr(epochs):
  np.testing.assert_allclose(kookmin.lr_factors(epochs), _entry_epoch_lrs(epochs), rtol=0, atol=1e-12)


def test_kookmin_four_epochs_is_the_entrys_half_one_two_thirds_one_third():
  np.testing.assert_allclose(kookmin.lr_factors(4), [1 / 2, 1, 2 / 3, 1 / 3])
  np.testing.assert_allclose(kookmin.lr_factors(5), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
  assert kookmin.make(get_model("mlp", 10), epochs=4).hyperparameters["lr_factors"] == tuple(kookmin.lr_factors(4))


# ---------------------------------------------------------------- neggrad_plus


def _loader_batches(order, batch_size):
  order = list(order)
  return [order[lo:lo + batch_size] for lo in range(0, len(order), batch_size)]


def _source_pairs(r_order, f_order, br, bf):
  """The source's epoch: ``for (xr, yr), (xf, yf) in zip(retain_loader, cycle(forget_loader))``."""
  return list(zip(_loader_batches(r_order, br), itertools.cycle(_loader_batches(f_order, bf))))


def _recorded_pairs(n_r, n_f, br, bf):
  """Runs :func:`neggrad_plus.cycle_pairs` (jitted) with a step that records each pair it sees."""
  r_order = jnp.asarray(np.random.default_rng(0).permutation(n_r) + 1000)
  f_order = jnp.asarray(np.random.default_rng(1).permutation(n_f) + 5000)
  n_steps = -(-n_r // br)

  def step(state, batch, key):
    del key
    buf, count = state
    r_idx, f_idx = batch
    row = jnp.concatenate([jnp.pad(r_idx, (0, br - r_idx.shape[0]), constant_values=-1),
                           jnp.pad(f_idx, (0, bf - f_idx.shape[0]), constant_values=-1)])
    return (buf.at[count].set(row), count + 1), {"loss": jnp.float32(r_idx.shape[0] + f_idx.shape[0])}

  init = (jnp.full((n_steps, br + bf), -1, r_order.dtype), jnp.int32(0))
  (buf, count), _ = jax.jit(lambda s: neggrad_plus.cycle_pairs(step, s, r_order, f_order, br, bf,
                                                               jax.random.key(0)))(init)
  assert int(count) == n_steps
  buf = np.asarray(buf)
  pairs = [([int(v) for v in row[:br] if v >= 0], [int(v) for v in row[br:] if v >= 0]) for row in buf]
  return pairs, np.asarray(r_order).tolist(), np.asarray(f_order).tolist()


@pytest.mark.parametrize("n_r,n_f,br,bf", [
    (50, 13, 4, 5),    # forget short batch of 3, 13 steps: cycles of 3 with a tail
    (48, 13, 4, 5),    # no retain remainder
    (50, 15, 4, 5),    # forget divides evenly
    (10, 23, 3, 4),    # more forget batches than steps (no wrap), retain remainder 1
    (30, 3, 4, 8),     # forget smaller than its batch: every step replays the same short batch
    (64, 16, 16, 8),   # the registry contract's small settings
    (37, 11, 5, 11),   # one full forget batch per cycle
])
def test_neggrad_plus_batch_order_is_zip_with_itertools_cycle(n_r, n_f, br, bf):
  got, r_order, f_order = _recorded_pairs(n_r, n_f, br, bf)
  want = _source_pairs(r_order, f_order, br, bf)
  assert got == [(list(r), list(f)) for r, f in want]


def test_neggrad_plus_cost_counts_the_short_forget_batches():
  # 10 steps (40 retain at 4), forget 13 at 5 -> batches 5, 5, 3 cycled: 3 whole cycles + one batch of 5
  assert neggrad_plus.paired_forget_examples(40, 13, 4, 5) == 3 * 13 + 5
  method = neggrad_plus.make(get_model("mlp", 10), batch_size=4, forget_batch_size=5, epochs=2)
  assert method.cost(SetSizes(retain=40, forget=13, validation=1)) == pytest.approx(2 * (1 + 44 / 40))


def test_neggrad_plus_runs_with_a_short_forget_batch():
  data = small_digits(n_retain=40, n_forget=13)
  model = get_model("mlp", 10)
  params, stats = init_variables(model, jax.random.key(0), data.image_shape)
  method = neggrad_plus.make(model, epochs=2, batch_size=16, forget_batch_size=5)
  res = jax.jit(method.unlearn)(ModelState(params, stats), data, jax.random.key(1))
  assert np.isfinite(np.asarray(res.metrics["loss"])).all()
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), res.state.params, params)
  assert max(jax.tree.leaves(moved)) > 0


# ---------------------------------------------------------------- seif


def test_seif_balanced_weights_are_scikit_learns():
  counts = jnp.asarray([4.0, 1.0, 0.0, 3.0])
  # compute_class_weight("balanced", classes=[0, 1, 3], y) = n / (n_classes * bincount): 8 / (3 * n_c)
  np.testing.assert_allclose(seif.balanced_weights(counts), [8 / 12, 8 / 3, 0.0, 8 / 9], rtol=1e-6)


@pytest.mark.parametrize("choice", ["author", "balanced"])
def test_seif_loss_uses_the_chosen_class_weights(choice):
  data = small_digits()
  model = get_model("tiny_cnn", 10, conv_impl="gemm")
  params, stats = init_variables(model, jax.random.key(0), data.image_shape)
  method = seif.make(model, epochs=1, lr=0.0, batch_size=128, noise_std=0.0, last_noise_std=0.0,
                     class_weights=choice)
  assert method.hyperparameters["class_weights"] == choice
  res = jax.jit(method.unlearn)(ModelState(params, stats), data, jax.random.key(1))
  x, y = data.gather(data.retain)
  logits, _ = steps.apply_train(model, params, stats, x)
  y = np.asarray(y)
  ce = -np.mean(np.asarray(jax.nn.log_softmax(logits))[np.arange(y.shape[0]), y])
  if choice == "author":
    w = np.where(y == 0, 1.0, 0.05)
  else:
    counts = np.bincount(y, minlength=10).astype(np.float64)
    present = counts > 0
    table = np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0)
    w = table[y]
  np.testing.assert_allclose(res.metrics["loss"], [ce * w.mean()], rtol=1e-5)


def test_seif_default_is_the_authors_vector_and_bad_choice_is_refused():
  model = get_model("mlp", 10)
  assert seif.make(model).hyperparameters["class_weights"] == "author"
  with pytest.raises(ValueError, match="class_weights"):
    seif.make(model, class_weights="inverse")


# ---------------------------------------------------------------- the competition's forget set and test split


def write_kaggle_folder(root, people_per_file=(("retain.csv", 10), ("forget.csv", 3), ("validation.csv", 8)),
                        images_per_person=3, side=8, seed=0):
  """A miniature Kaggle folder (retain/forget/validation CSVs, ``images/<person>/<n>.png``, ids
  ``<person>_<n>``); person ids run on across the files. Returns ``{file: [person ids]}``."""
  import csv
  import os

  from PIL import Image
  rng = np.random.default_rng(seed)
  people, next_person = {}, 100
  for name, count in people_per_file:
    people[name] = list(range(next_person, next_person + count))
    next_person += count
    with open(os.path.join(root, name), "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["image_id", "person_id", "age", "age_group"])
      for person in people[name]:
        os.makedirs(os.path.join(root, "images", str(person)), exist_ok=True)
        for n in range(images_per_person + person % 2):  # unequal counts per person
          Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
              os.path.join(root, "images", str(person), f"{n}.png"))
          group = int(rng.integers(0, 10))
          w.writerow([f"{person}_{n}", person, 20 + group, group])
  return people


def _evaluate_config(argv):
  import argparse

  from unlearn_jax.commands import evaluate as evaluate_cmd
  from unlearn_jax.protocol import config as protocol_config
  parser = argparse.ArgumentParser()
  evaluate_cmd.add_parser(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["evaluate", *argv])
  return protocol_config.from_dict(evaluate_cmd.resolve_config(args))


def test_competition_defaults_to_its_own_forget_list_other_datasets_to_random():
  assert _evaluate_config(["--dataset", "competition"]).split.forget == "source"
  assert _evaluate_config(["--config", "tiny", "--dataset", "competition"]).split.forget == "source"
  assert _evaluate_config(["--dataset", "competition", "--forget-mode", "random"]).split.forget == "random"
  assert _evaluate_config(["--dataset", "competition", "--forget-mode", "groups"]).split.forget == "groups"
  assert _evaluate_config(["--dataset", "digits"]).split.forget == "random"
  assert _evaluate_config(["--dataset", "competition", "--set", "forget_mode=random"]).split.forget == "random"


def test_methods_command_shows_the_competition_forget_default(capsys):
  from unlearn_jax import cli
  assert cli.main(["methods", "--dataset", "competition"]) == 0
  first = capsys.readouterr().out.splitlines()[0]
  assert "forget mode source" in first and "whole people" in first
  assert cli.main(["methods", "--dataset", "digits"]) == 0
  assert "forget mode random" in capsys.readouterr().out.splitlines()[0]


def test_competition_default_split_is_the_forget_lists_people_and_test_is_person_disjoint(tmp_path):
  from unlearn_jax.data import load_dataset, make_splits
  from unlearn_jax.data.splits import group_counts
  people = write_kaggle_folder(str(tmp_path))
  ds = load_dataset("competition", str(tmp_path))
  spec = _evaluate_config(["--dataset", "competition", "--split-seed", "3"]).split
  idx, _ = make_splits(ds, spec)
  groups = ds.groups
  assert set(groups[idx["forget"]].tolist()) == set(people["forget.csv"])
  assert set(groups[idx["retain"]].tolist()) == set(people["retain.csv"])
  assert not set(groups[idx["forget"]].tolist()) & set(groups[idx["retain"]].tolist())
  # validation.csv's rows, divided by person into two halves
  val_rows = np.flatnonzero(np.isin(groups, people["validation.csv"]))
  np.testing.assert_array_equal(np.sort(np.concatenate([idx["validation"], idx["test"]])), val_rows)
  v, t = set(groups[idx["validation"]].tolist()), set(groups[idx["test"]].tolist())
  assert v and t and not v & t and v | t == set(people["validation.csv"])
  assert abs(len(idx["validation"]) - len(val_rows) / 2) <= 2  # closest whole-person share to a half
  counts = group_counts(groups, idx)
  assert counts["forget_people_in_retain"] == 0 and counts["validation_people_in_test"] == 0
  assert counts["forget_people"] == 3
  # the halves follow --split-seed (same seed: same halves) and the forget list does not
  again, _ = make_splits(ds, spec)
  np.testing.assert_array_equal(again["validation"], idx["validation"])
  halves = {tuple(make_splits(ds, _evaluate_config(["--dataset", "competition", "--split-seed", str(s)]).split)[0]
                  ["validation"]) for s in range(6)}
  assert len(halves) > 1
  # random forgetting (the former default) splits people between forget and retain
  rnd, _ = make_splits(ds, _evaluate_config(["--dataset", "competition", "--forget-mode", "random",
                                             "--forget-fraction", "0.3"]).split)
  assert group_counts(groups, rnd)["forget_people_in_retain"] > 0


# ---------------------------------------------------------------- evaluate --original


def _cli(args, expect_rc=0):
  import contextlib
  import io

  from unlearn_jax import cli
  err, out = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    rc = cli.main(args)
  assert rc == expect_rc, err.getvalue()
  return out.getvalue(), err.getvalue()


def _given_original(tmp_path, config, key=3):
  from unlearn_jax import checkpoint
  from unlearn_jax.data import load_dataset
  from unlearn_jax.training.state import init_variables
  ds = load_dataset(config.dataset)
  model = get_model(config.model, ds.num_classes)
  params, stats = init_variables(model, jax.random.key(key), ds.image_shape)
  path = str(tmp_path / f"given{key}.npz")  # an original saved in our format (as the cache's model.npz)
  checkpoint.save_arrays(path, checkpoint.flatten_tree(dict(params=params, batch_stats=stats)))
  return path, ds, model, params, stats


def _accuracies(ds, split_spec, model, params, stats):
  from unlearn_jax.data import make_splits
  _, data = make_splits(ds, split_spec)
  out = {}
  for split in ("retain", "forget", "test"):
    x, y = data.gather(data.split(split))
    logits = model.apply({"params": params, "batch_stats": stats} if stats else {"params": params}, x, train=False)
    out[split] = float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(y)))
  return out


def test_original_stage_loads_the_given_model_without_training_and_keys_by_its_sha(tmp_path, monkeypatch):
  import dataclasses

  from unlearn_jax import checkpoint
  from unlearn_jax.protocol import context as protocol_context
  from unlearn_jax.protocol import stages
  from unlearn_jax.results.progress import Progress
  config = dataclasses.replace(_evaluate_config(["--config", "tiny"]), cache_dir=str(tmp_path / "cache"))
  given, ds, model, params, stats = _given_original(tmp_path, config)
  other, *_ = _given_original(tmp_path, config, key=4)

  def no_training(*a, **k):
    raise AssertionError("the original must not be trained")

  monkeypatch.setattr(stages, "make_train_fn", no_training)
  ctx = protocol_context.build_context(dataclasses.replace(config, original=given))
  first = stages.original_model(ctx, jax.random.key(0), Progress(enabled=False))
  state, out, directory, cached = first.state, first.outputs, first.directory, first.cached
  assert not cached
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  want = _accuracies(ds, config.split, model, params, stats)
  for split, acc in want.items():
    assert float(out[f"{split}_accuracy"]) == pytest.approx(acc, abs=1e-6)
  second = stages.original_model(ctx, jax.random.key(0), Progress(enabled=False))
  again, cached = second.directory, second.cached
  assert cached and again == directory
  keys = lambda c: {k: checkpoint.cache_key(c.key_parts(k)) for k in ("original", "retrained")}
  trained = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, original=None), given_original=None)
  ctx_other = protocol_context.build_context(dataclasses.replace(config, original=other))
  assert keys(ctx)["retrained"] == keys(ctx_other)["retrained"] == keys(trained)["retrained"]
  assert len({keys(ctx)["original"], keys(ctx_other)["original"], keys(trained)["original"]}) == 3


@pytest.mark.slow
def test_evaluate_original_skips_training_and_keys_caches_by_the_file(tmp_path, monkeypatch):
  import hashlib
  import os

  from tests.helpers import load_results
  from unlearn_jax import checkpoint
  from unlearn_jax.data import load_dataset, make_splits
  from unlearn_jax.protocol import stages
  from unlearn_jax.training.state import init_variables
  config = _evaluate_config(["--config", "tiny"])
  ds = load_dataset(config.dataset)
  model = get_model(config.model, ds.num_classes)
  params, stats = init_variables(model, jax.random.key(3), ds.image_shape)
  given = str(tmp_path / "given.npz")  # an original saved in our format (as the cache's model.npz)
  checkpoint.save_arrays(given, checkpoint.flatten_tree(dict(params=params, batch_stats=stats)))

  trained_splits = []
  real = stages.make_train_fn

  def spy(model, recipe, split="train", **kw):
    trained_splits.append(split)
    return real(model, recipe, split=split, **kw)

  monkeypatch.setattr(stages, "make_train_fn", spy)
  cache = str(tmp_path / "cache")
  base = ["evaluate", "--config", "tiny", "--method", "none", "--num-models", "2", "--chunk-size", "2",
          "--cache-dir", cache]
  _, err = _cli(base + ["--original", given, "--output-dir", str(tmp_path / "given")])
  res = load_results(str(tmp_path / "given"))
  assert trained_splits and "train" not in trained_splits  # retrained models trained, the original not
  assert "[original] given" in err and "[original] trained" not in err
  sha = hashlib.sha256((tmp_path / "given.npz").read_bytes()).hexdigest()
  assert res["original"]["given"] == {"path": given, "format": "unlearn-jax-npz", "sha256": sha}
  idx, data = make_splits(ds, config.split)  # the given model's accuracies, computed here independently
  for split in ("retain", "forget", "test"):
    x, y = data.gather(data.split(split))
    logits = model.apply({"params": params, "batch_stats": stats} if stats else {"params": params}, x, train=False)
    want = float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(y)))
    assert res["original"][f"{split}_accuracy"] == pytest.approx(want, abs=1e-6)
  assert "kept_epoch" not in res["original"]

  arrays, meta = checkpoint.load_arrays(given)  # a changed file: new original and unlearning entries
  name = sorted(k for k in arrays if k.startswith("params/"))[0]
  arrays[name] = arrays[name] + 0.01
  changed = str(tmp_path / "changed.npz")
  checkpoint.save_arrays(changed, arrays, meta)
  trained_splits.clear()
  _, err = _cli(base + ["--original", changed, "--output-dir", str(tmp_path / "changed")])
  assert "[retrained] 2 models from cache" in err and "[original] given" in err
  other = load_results(str(tmp_path / "changed"))
  assert "train" not in trained_splits  # the original is still not trained
  assert other["original"]["given"]["sha256"] != sha
  assert other["cache"]["original"] != res["cache"]["original"]
  assert os.path.basename(other["cache"]["unlearned"]) != os.path.basename(res["cache"]["unlearned"])
  assert other["cache"]["retrained"] == res["cache"]["retrained"]  # not derived from the original


def test_evaluate_original_bad_files_are_one_line_errors(tmp_path):
  from tests.pth_support import write_pth
  base = ["evaluate", "--config", "tiny", "--num-models", "2", "--cache-dir", str(tmp_path / "c"),
          "--output-dir", str(tmp_path / "o"), "--quiet"]
  _, err = _cli(base + ["--original", str(tmp_path / "absent.pth")], expect_rc=2)
  assert err.startswith("unlearn-jax: error: --original") and "does not exist" in err and err.count("\n") == 1
  small = tmp_path / "small.pth"
  write_pth(small, {"fc.weight": np.zeros((10, 4), np.float32)})
  _, err = _cli(base + ["--original", str(small)], expect_rc=2)
  assert "needs --model resnet18" in err and err.count("\n") == 1
  bad = tmp_path / "bad.npz"
  from unlearn_jax import checkpoint
  checkpoint.save_arrays(str(bad), {"params/fc/kernel": np.zeros((3, 3), np.float32)})
  _, err = _cli(base + ["--original", str(bad)], expect_rc=2)
  assert "lacks params" in err or "has params" in err or "has shape" in err
  assert not (tmp_path / "o" / "results.json").exists()


def test_given_torchvision_pth_becomes_our_resnet18_original(tmp_path):
  from tests.pth_support import random_state_dict, write_pth
  from unlearn_jax.interop import import_torchvision_resnet18
  from unlearn_jax.protocol import original
  sd = random_state_dict(np.random.default_rng(4))
  path = tmp_path / "original_model.pth"
  write_pth(path, sd)
  given = original.describe(str(path))
  assert given.format == "torchvision-pth" and len(given.sha256) == 64
  model = get_model("resnet18", 10)
  params, stats = original.load(given, "resnet18", model, 10, (32, 32, 3))
  want_p, want_s = import_torchvision_resnet18(sd)
  for got, want in ((params, want_p), (stats, want_s)):
    flat_got, flat_want = jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves_with_path(want)
    assert [p for p, _ in flat_got] == [p for p, _ in flat_want]
    for (_, a), (_, b) in zip(flat_got, flat_want):
      np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="has 10 output classes; the dataset has 7"):
    original.load(given, "resnet18", get_model("resnet18", 7), 7, (32, 32, 3))


def test_checkpoint_regimes_later_run_by_default_fresh_run_by_one_setting():
  from unlearn_jax.protocol.config import resolve_recipe
  later = _evaluate_config(["--dataset", "competition"])
  recipe = resolve_recipe(later.recipe, later.recipe_overrides)
  assert recipe.checkpoint_rule("original").kind == "best_val" and recipe.checkpoint_rule("retrained").kind == "last"
  fresh = _evaluate_config(["--dataset", "competition", "--set", "recipe_overrides.checkpoint=last"])
  recipe = resolve_recipe(fresh.recipe, fresh.recipe_overrides)
  assert recipe.checkpoint_rule("original").kind == "last" and recipe.checkpoint_rule("retrained").kind == "last"


# ---------------------------------------------------------------- the split record and the summary's split lines


def _people(groups, idx):
  return set(np.asarray(groups)[np.asarray(idx)].tolist())


def _competition_context(root, *argv):
  from unlearn_jax.protocol import context as protocol_context
  return protocol_context.build_context(_evaluate_config(["--dataset", "competition", "--data-dir", str(root),
                                                          "--model", "tiny_mlp", *argv]))


def test_split_record_is_the_person_disjoint_split_the_run_uses(tmp_path):
  import json

  from unlearn_jax.data import load_dataset, make_splits
  from unlearn_jax.data.splits import SplitSpec
  from unlearn_jax.protocol import context as protocol_context
  from unlearn_jax.protocol.run import split_record
  people = write_kaggle_folder(str(tmp_path))
  ds = load_dataset("competition", str(tmp_path))
  halves = {}
  for seed in range(4):
    ctx = _competition_context(tmp_path, "--split-seed", str(seed))
    rec = split_record(ctx)
    assert json.loads(json.dumps(rec)) == rec  # as results.json holds it
    assert rec["split"]["forget"] == "source" and rec["split"]["seed"] == seed
    used = {k: np.asarray(getattr(ctx.data, k)) for k in ("retain", "forget", "validation", "test")}
    for k, idx in used.items():  # the recorded settings rebuild the very splits the run's data holds
      np.testing.assert_array_equal(np.sort(idx), np.sort(ctx.indices[k]))
    again, _ = make_splits(ds, SplitSpec(**rec["split"]))
    for k, idx in used.items():
      np.testing.assert_array_equal(np.sort(again[k]), np.sort(idx))
    sets = {k: _people(ds.groups, idx) for k, idx in used.items()}
    assert sets["forget"] == set(people["forget.csv"]) and sets["retain"] == set(people["retain.csv"])
    assert sets["validation"] and sets["test"] and sets["validation"] | sets["test"] == set(people["validation.csv"])
    assert rec["split_people"] == {"retain_people": len(sets["retain"]), "forget_people": len(sets["forget"]),
                                   "validation_people": len(sets["validation"]), "test_people": len(sets["test"]),
                                   "forget_people_in_retain": len(sets["forget"] & sets["retain"]),
                                   "validation_people_in_test": len(sets["validation"] & sets["test"])}
    assert rec["split_people"]["forget_people_in_retain"] == rec["split_people"]["validation_people_in_test"] == 0
    halves[seed] = tuple(sorted(sets["validation"]))
  assert len(set(halves.values())) > 1  # the halves follow --split-seed
  digits = protocol_context.build_context(_evaluate_config(["--config", "tiny"]))
  assert split_record(digits)["split_people"] is None  # no person ids


def test_summary_shows_the_people_and_the_datasets_forget_default(tmp_path):
  import argparse

  from unlearn_jax.commands import evaluate as evaluate_cmd
  from unlearn_jax.protocol.run import split_record
  write_kaggle_folder(str(tmp_path))

  def shown_and_expected(*argv):
    parser = argparse.ArgumentParser()
    evaluate_cmd.add_parser(parser.add_subparsers(dest="command"))
    cfg = evaluate_cmd.resolve_config(parser.parse_args(["evaluate", "--dataset", "competition", "--data-dir",
                                                         str(tmp_path), "--model", "tiny_mlp", *argv]))
    ctx = _competition_context(tmp_path, *argv)
    sets = {k: _people(ctx.data.groups, idx) for k, idx in ctx.indices.items()}
    people = (f"people: forget {len(sets['forget'])} ({len(sets['forget'] & sets['retain'])} also in retain), "
              f"validation {len(sets['validation'])} / test {len(sets['test'])} "
              f"({len(sets['validation'] & sets['test'])} in both)")
    return evaluate_cmd.split_lines(split_record(ctx), cfg), people, sets

  shown, people, sets = shown_and_expected("--split-seed", "2")
  assert shown == [people, "forget set: mode source (default of dataset competition; --forget-mode to change)"]
  assert "(0 also in retain)" in people and "(0 in both)" in people
  # a chosen mode is not called the dataset's default; random forgetting leaves forget people in retain
  shown, people, sets = shown_and_expected("--forget-mode", "random", "--forget-fraction", "0.3")
  assert shown == [people] and sets["forget"] & sets["retain"]
  shown, people, _ = shown_and_expected("--forget-mode", "source")
  assert shown == [people]
  parser = argparse.ArgumentParser()
  evaluate_cmd.add_parser(parser.add_subparsers(dest="command"))
  digits = evaluate_cmd.resolve_config(parser.parse_args(["evaluate", "--config", "tiny"]))
  assert evaluate_cmd.split_lines({"split_people": None}, digits) == []  # no person ids; random is no dataset default


def test_given_pth_goes_through_the_original_stage_untrained_and_keys_by_its_bytes(tmp_path, monkeypatch):
  """``evaluate --original x.pth`` on the Kaggle layout: the context describes the file, the original stage
  loads the torchvision state dict into our ResNet-18 without training, caches it, and a file with other
  bytes (other values, or the same values in another archive) is another cache entry. The measurement is
  replaced by a cheap one of the loaded parameters (a ResNet-18 program takes long to compile here); the real
  measurement of a given original is checked on the ``.npz`` path above, which shares it."""
  import dataclasses
  import hashlib
  import os

  from tests.pth_support import random_state_dict, write_pth
  from unlearn_jax import checkpoint
  from unlearn_jax.interop import import_torchvision_resnet18
  from unlearn_jax.protocol import context as protocol_context
  from unlearn_jax.protocol import stages
  from unlearn_jax.results.progress import Progress
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  write_kaggle_folder(str(data_dir))
  sd = random_state_dict(np.random.default_rng(5))
  first_pth = tmp_path / "original_model.pth"
  write_pth(first_pth, sd)

  def no_training(*a, **k):
    raise AssertionError("the original must not be trained")

  measured = []

  def leaf_sums(model):
    def measure(params, batch_stats, data):
      measured.append(1)
      return {"leaf_sums": jnp.stack([jnp.sum(a) for a in jax.tree.leaves((params, batch_stats))])}
    return measure

  monkeypatch.setattr(stages, "make_train_fn", no_training)
  monkeypatch.setattr(stages, "make_measure_fn", leaf_sums)
  base = _evaluate_config(["--dataset", "competition", "--data-dir", str(data_dir), "--cache-dir",
                           str(tmp_path / "cache")])
  assert base.model == "resnet18"  # the dataset's default model, the layout of the competition's original

  def stage(path):
    ctx = protocol_context.build_context(dataclasses.replace(base, original=str(path)))
    return ctx, stages.original_model(ctx, jax.random.key(0), Progress(enabled=False))

  def assert_holds(result, state_dict):
    want_p, want_s = import_torchvision_resnet18(state_dict)
    for got, want in ((result.state.params, want_p), (result.state.batch_stats, want_s)):
      assert jax.tree.structure(got) == jax.tree.structure(want)
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), b)
    np.testing.assert_allclose(result.outputs["leaf_sums"], [np.sum(a) for a in jax.tree.leaves((want_p, want_s))],
                               rtol=1e-5)

  ctx, first = stage(first_pth)
  assert ctx.given_original.format == "torchvision-pth" and not first.cached and measured
  assert ctx.given_original.sha256 == hashlib.sha256(first_pth.read_bytes()).hexdigest()
  assert_holds(first, sd)
  measured.clear()
  _, again = stage(first_pth)
  assert again.cached and again.directory == first.directory and not measured  # read back, not measured again

  changed = dict(sd, **{"fc.bias": sd["fc.bias"] + 0.5})
  changed_pth = tmp_path / "changed.pth"
  write_pth(changed_pth, changed)
  changed_ctx, other = stage(changed_pth)
  assert not other.cached and other.directory != first.directory
  assert os.path.basename(other.directory) == f"original-{checkpoint.cache_key(changed_ctx.key_parts('original'))}"
  assert_holds(other, changed)
  repacked_pth = tmp_path / "repacked.pth"  # the same tensors in another archive folder: only the bytes differ
  write_pth(repacked_pth, sd, archive="repacked")
  assert repacked_pth.read_bytes() != first_pth.read_bytes()
  repacked_ctx = protocol_context.build_context(dataclasses.replace(base, original=str(repacked_pth)))
  key = lambda c, kind: checkpoint.cache_key(c.key_parts(kind))
  assert len({key(c, "original") for c in (ctx, changed_ctx, repacked_ctx)}) == 3
  assert len({key(c, "retrained") for c in (ctx, changed_ctx, repacked_ctx)}) == 1  # not derived from the original


@pytest.mark.slow
def test_competition_run_records_and_prints_the_split_it_used(tmp_path):
  """End to end through the command line (the fast tests above check the same fields from the context)."""
  import argparse

  from tests.helpers import load_results
  from unlearn_jax.commands import evaluate as evaluate_cmd
  from unlearn_jax.protocol.run import split_record
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  write_kaggle_folder(str(data_dir))
  argv = ["--dataset", "competition", "--data-dir", str(data_dir), "--model", "tiny_mlp", "--split-seed", "5"]
  out, _ = _cli(["evaluate", "--config", "tiny", *argv, "--method", "none", "--num-models", "2", "--chunk-size", "2",
                 "--no-plots", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "run")])
  res = load_results(str(tmp_path / "run"))
  want = split_record(_competition_context(data_dir, "--config", "tiny", "--split-seed", "5"))
  assert res["split"] == want["split"] and res["split"]["seed"] == 5 and res["split"]["forget"] == "source"
  assert res["split_people"] == want["split_people"]
  assert res["split_people"]["forget_people_in_retain"] == res["split_people"]["validation_people_in_test"] == 0
  shown = [line.strip() for line in out.splitlines()]
  parser = argparse.ArgumentParser()
  evaluate_cmd.add_parser(parser.add_subparsers(dest="command"))
  cfg = evaluate_cmd.resolve_config(parser.parse_args(["evaluate", "--config", "tiny", *argv]))
  lines = evaluate_cmd.split_lines(res, cfg)
  assert len(lines) == 2 and all(line in shown for line in lines)
