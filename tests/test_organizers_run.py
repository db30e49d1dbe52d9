"""Faithfulness to the organizers' run (google-deepmind/unlearning_evaluation): class weights,
checkpoint rules per role, the competition's finetune baseline, preset values, no-op detection."""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import small_digits
from unlearn_jax import checkpoint, cli
from unlearn_jax.protocol.config import EvalConfig, from_dict
from unlearn_jax.protocol.context import Context, SeedPlan
from unlearn_jax.commands import evaluate as evaluate_cmd
from unlearn_jax.models import get_model
from unlearn_jax.training import (CheckpointRule, Recipe, checkpoint_init, checkpoint_update, competition_recipe,
                                  describe_training, digits_recipe, engine, make_train_fn, starting_kit_recipe)
from unlearn_jax.unlearning import get_method, neggrad_plus, scrub
from unlearn_jax.unlearning import finetune as finetune_lib


# ------------------------------------------------------------------ class weights


class _Captured(Exception):
  pass


@pytest.fixture(scope="module")
def digits16():
  return small_digits(n_retain=64, n_forget=16)


def _weights_used(monkeypatch, data, recipe, split):
  """The class-weight vector ``make_train_fn`` hands to the train step (training is not run)."""
  seen = {}

  def capture(model, tx, class_weights=None, augment="none"):
    seen["w"] = None if class_weights is None else np.asarray(class_weights)
    raise _Captured

  monkeypatch.setattr(engine, "make_train_step", capture)
  with pytest.raises(_Captured):
    make_train_fn(get_model("tiny_mlp", 10), recipe, split=split)(jax.random.key(0), data)
  return seen["w"]


def _inverse_counts(labels):
  counts = np.bincount(np.asarray(labels), minlength=10).astype(np.float64)
  return np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)


def test_retrained_model_weights_are_the_training_split_inverse_counts(monkeypatch, digits16):
  data = digits16
  w = _weights_used(monkeypatch, data, digits_recipe(), "retain")
  labels = np.asarray(data.labels)
  train = np.concatenate([np.asarray(data.retain), np.asarray(data.forget)])
  np.testing.assert_allclose(w, _inverse_counts(labels[train]), rtol=1e-6)
  retain_only = _inverse_counts(labels[np.asarray(data.retain)])
  assert not np.allclose(w, retain_only)  # the forget set changes the counts here
  # the original gets the same vector; "fit" counts the trained split instead (the former behaviour)
  w_orig = _weights_used(monkeypatch, data, digits_recipe(), "train")
  np.testing.assert_array_equal(w_orig, w)
  w_fit = _weights_used(monkeypatch, data, digits_recipe(class_weight_split="fit"), "retain")
  np.testing.assert_allclose(w_fit, retain_only, rtol=1e-6)
  w_ce = _weights_used(monkeypatch, data, digits_recipe(loss="ce"), "retain")
  assert w_ce is None


def test_describe_training_records_rules_and_counts(digits16):
  data = digits16
  rec = describe_training(competition_recipe(), data)
  counts = np.bincount(np.asarray(data.labels)[np.asarray(data.train)], minlength=10).tolist()
  assert rec["original"] == {"split": "train", "checkpoint": "best_val", "min_save_epoch": 0,
                             "class_weights_from": "train", "class_counts": counts}
  assert rec["retrained"] == {"split": "retain", "checkpoint": "last", "min_save_epoch": 20,
                              "class_weights_from": "train", "class_counts": counts}
  kit = describe_training(starting_kit_recipe(), data)
  assert kit["retrained"]["class_weights_from"] is None and kit["original"]["checkpoint"] == "last"


# ------------------------------------------------------------------ checkpoint rule


def organizers_saved_epoch(val_accs, min_save_epoch):
  """Plain-Python transcription of train_lib.train + _test: the epoch whose model was last saved
  (``None`` if no file was written). ``best_acc`` starts at 0 and is updated at every epoch."""
  best_acc, saved = 0, None
  for epoch, acc in enumerate(val_accs):
    do_saving = epoch >= min_save_epoch
    if acc > best_acc:
      if do_saving:
        saved = epoch
      best_acc = acc
  return saved


@jax.jit
def _scan_rule(accs, min_save_epoch):
  epochs = jnp.arange(accs.shape[0], dtype=jnp.int32)

  def body(carry, xs):
    acc, epoch = xs
    return checkpoint_update(carry, epoch, acc, epoch, min_save_epoch), None

  carry, _ = jax.lax.scan(body, checkpoint_init(jnp.int32(-1)), (accs, epochs))
  return carry


def _scripted_pick(val_accs, min_save_epoch):
  """``checkpoint_update`` scanned over a scripted sequence, with the epoch number as the "model"."""
  carry = _scan_rule(jnp.asarray(val_accs, jnp.float32), jnp.int32(min_save_epoch))
  assert int(carry["model"]) == int(carry["epoch"])
  return int(carry["epoch"])


SCRIPTED = [
    ([0.5, 0.9, 0.7, 0.8, 0.85], 2),  # carry-over: nothing after epoch 2 beats epoch 1's 0.9
    ([0.5, 0.6, 0.7, 0.65, 0.9], 2),
    ([0.5, 0.6, 0.7, 0.65, 0.9], 0),
    ([0.8, 0.8, 0.8], 0),  # ties never replace: the first epoch stays
    ([0.8, 0.8, 0.8], 1),  # nothing beats the carried 0.8 from epoch 1 on
    ([0.0, 0.0, 0.0], 0),  # 0 never beats the initial best of 0
    ([0.1, 0.3, 0.2, 0.3, 0.4, 0.35], 5),
]


@pytest.mark.parametrize("accs, min_save", SCRIPTED)
def test_checkpoint_rule_matches_train_lib_test_on_scripted_sequences(accs, min_save):
  expected = organizers_saved_epoch(accs, min_save)
  assert _scripted_pick(accs, min_save) == (-1 if expected is None else expected)


def test_checkpoint_rule_matches_train_lib_test_on_random_sequences():
  rng = np.random.default_rng(0)
  n = 7  # one length: one compiled scan
  for _ in range(60):
    accs = (rng.integers(0, 6, n) / 5).tolist()  # few distinct values: many ties and zeros
    min_save = int(rng.integers(0, n + 1))
    expected = organizers_saved_epoch(accs, min_save)
    assert _scripted_pick(accs, min_save) == (-1 if expected is None else expected), (accs, min_save)


def test_rules_per_role_and_validation():
  r = competition_recipe()
  assert r.checkpoint_rule("original") == CheckpointRule("best_val", 0)
  assert r.checkpoint_rule("retrained") == CheckpointRule("last", 20)
  assert engine.default_role("train") == "original" and engine.default_role("retain") == "retrained"
  with pytest.raises(ValueError, match="unknown checkpoint rule"):
    Recipe(retrain_checkpoint="best")
  with pytest.raises(ValueError, match="min_save_epoch"):
    Recipe(min_save_epoch=-1)
  shorter = r.with_epochs(5)
  assert (shorter.epochs, shorter.min_save_epoch, shorter.retrain_min_save_epoch) == (5, 0, 4)


@pytest.fixture(scope="module")
def tiny_training():
  data = small_digits(n_retain=96, n_forget=16, n_val=32)
  model = get_model("tiny_mlp", 10)
  base = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, schedule="constant", epochs=4,
                batch_size=32, loss="weighted_ce")
  return data, model, base


def _train(model, recipe, data, split="train", role=None):
  return jax.jit(make_train_fn(model, recipe, split=split, role=role))(jax.random.key(3), data)


def test_engine_keeps_the_epoch_train_lib_would_save(tiny_training):
  data, model, base = tiny_training
  res = _train(model, base.replace(checkpoint="best_val", min_save_epoch=1), data)
  expected = organizers_saved_epoch(np.asarray(res.val_accuracy).tolist(), 1)
  expected = base.epochs - 1 if expected is None else expected
  assert int(res.best_epoch) == expected
  # with a constant rate, the first (expected + 1) epochs of a run are that run: its last-epoch model
  prefix = _train(model, base.replace(epochs=expected + 1, checkpoint="last"), data)
  for a, b in zip(jax.tree.leaves((res.params, res.batch_stats)), jax.tree.leaves((prefix.params,
                                                                                    prefix.batch_stats))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_engine_falls_back_to_the_last_epoch_and_applies_the_role_rule(tiny_training):
  data, model, base = tiny_training
  frozen = base.replace(lr=1e-12, checkpoint="best_val", min_save_epoch=1, retrain_checkpoint="last")
  res = _train(model, frozen, data)
  val = np.asarray(res.val_accuracy)
  assert np.all(val == val[0]) and val[0] > 0  # nothing moves, so nothing after epoch 0 beats it
  assert int(res.best_epoch) == base.epochs - 1
  # on retain the retrained rule applies: the last epoch, whatever the validation curve
  res_r = _train(model, base.replace(checkpoint="best_val"), data, split="retain")
  assert int(res_r.best_epoch) == base.epochs - 1


def test_cache_keys_follow_each_checkpoint_rule():
  def keys(recipe):
    ctx = Context(EvalConfig(), None, {}, None, recipe, "fp", SeedPlan("vmap", None, "given"))
    return {kind: checkpoint.cache_key(ctx.key_parts(kind)) for kind in ("original", "retrained")}

  base = keys(digits_recipe())
  assert keys(digits_recipe()) == base
  for change in (dict(retrain_checkpoint="best_val"), dict(retrain_min_save_epoch=3),
                 dict(checkpoint="last"), dict(min_save_epoch=2), dict(class_weight_split="fit")):
    other = keys(digits_recipe(**change))
    assert other["retrained"] != base["retrained"] and other["original"] != base["original"], change


# ------------------------------------------------------------------ competition finetune, presets


def _evaluate_config(argv):
  parser = argparse.ArgumentParser()
  evaluate_cmd.add_parser(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["evaluate", *argv])
  return from_dict(evaluate_cmd.resolve_config(args))


def test_competition_finetune_is_the_organizers_do_unlearning():
  config = _evaluate_config(["--dataset", "competition", "--method", "finetune"])
  hp = dict(config.hyperparameters)
  assert hp == {"preset": "kaggle"}
  method = get_method("finetune", get_model("tiny_mlp", 10), **hp)
  # main.py do_unlearning: SGD(lr=0.001, momentum=0.9, weight_decay=5e-4), CosineAnnealingLR(T_max=1)
  # over 1 epoch, batch 64, nn.CrossEntropyLoss() without weights, unlearned_model.train()
  assert dict(method.hyperparameters) == dict(preset="kaggle", lr=1e-3, momentum=0.9, weight_decay=5e-4,
                                              epochs=1, batch_size=64, schedule="constant", l2_init=0.0,
                                              bn_train=True)
  # a user's --hp still wins; other datasets keep the method's own default preset
  assert dict(_evaluate_config(["--dataset", "competition", "--hp", "lr=0.01"]).hyperparameters) == \
      {"preset": "kaggle", "lr": 0.01}
  assert dict(_evaluate_config(["--dataset", "digits", "--method", "finetune"]).hyperparameters) == {}
  assert dict(_evaluate_config(["--config", "tiny", "--dataset", "competition"]).hyperparameters) == \
      {"preset": "kaggle"}


def test_methods_command_shows_dataset_defaults(capsys):
  assert cli.main(["methods", "--dataset", "competition"]) == 0
  out = capsys.readouterr().out
  row = next(line for line in out.splitlines() if line.startswith("finetune "))
  assert "preset=kaggle" in row and row.split()[1] == "1.00"
  assert cli.main(["methods", "--names-only"]) == 0
  names = capsys.readouterr().out.split()
  assert names[:3] == ["none", "retrain", "finetune"] and "kookmin" in names


def test_presets_follow_their_sources():
  assert (scrub.PRESETS["small-scale"]["batch_size"], scrub.PRESETS["small-scale"]["forget_batch_size"]) == (32, 64)
  small = neggrad_plus.PRESETS["small-scale"]
  assert (small["batch_size"], small["forget_batch_size"]) == (128, 64)
  mia = finetune_lib.PRESETS["scrub-MIA"]
  assert (mia["bn_train"], mia["l2_init"], mia["lr"], mia["batch_size"], mia["momentum"]) == (True, 0.0, 0.04, 32, 0.0)
