"""The same-setup rule shared by every command that reads several results."""

from __future__ import annotations

import pytest

from unlearn_jax.results import setups


def _results(**changes):
  setup = setups.make_setup(dataset="digits", data_fingerprint="abc", model="mlp",
                            recipe={"name": "digits", "epochs": 20}, split={"forget": "random", "fraction": 0.1},
                            dtype="float32", num_models=128)
  setup.update(changes)
  return {"method": "finetune", "setup": setup}


def test_identical_setups_are_comparable():
  a, b = _results(), _results()
  assert setups.differences(a, b) == []
  setups.require_same_setup([a, b], ["A", "B"])
  assert setups.group_by_setup([a, b]) == [[0, 1]]


@pytest.mark.parametrize("field,value", [("num_models", 8), ("data", "other"), ("model", "cnn"),
                                         ("recipe", {"name": "digits", "epochs": 5}), ("dtype", "bfloat16"),
                                         ("split", {"forget": "classes", "fraction": 0.1})])
def test_each_field_separates_setups(field, value):
  a, b = _results(), _results(**{field: value})
  assert setups.differences(a, b) == [field]
  with pytest.raises(ValueError, match=f"B was evaluated on a different setup than A: {field}") as err:
    setups.require_same_setup([a, b], ["A", "B"])
  assert "\n" not in str(err.value)
  assert setups.group_by_setup([a, b, a]) == [[0, 2], [1]]


def test_older_results_without_a_setup_record_are_described_from_their_fields():
  old = {"method": "none", "dataset": "digits", "model": "mlp", "recipe": {"name": "digits"},
         "split": {"forget": "random"}, "num_models": 64, "num_models_scored": 62}
  s = setups.setup_of(old)
  assert s["num_models"] == 62 and s["dtype"] == "float32" and s["data"] is None
  assert setups.describe(s) == "digits / mlp / recipe digits / forget random / N=62"
  assert setups.differences(old, dict(old, num_models_scored=64)) == ["num_models"]
