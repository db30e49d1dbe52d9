"""The public method toolkit (:mod:`unlearn_jax.unlearning.toolkit`): step budgets and presets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from unlearn_jax.training.state import TrainState
from unlearn_jax.unlearning import METHODS, toolkit
from unlearn_jax.unlearning.toolkit import HParam


def test_run_steps_takes_exactly_the_budget_of_steps(data):
  def step(state, batch, key):
    return state.replace(step=state.step + 1, params=state.params + batch[0].shape[0]), {"loss": jnp.zeros(())}

  state = TrainState(jnp.zeros((), jnp.int32), jnp.zeros(()), {}, ())
  out, losses = toolkit.run_steps(step, state, data, data.retain, 10, 22, jax.random.key(0))
  assert int(out.step) == 22 and losses.shape == (4,)
  assert float(out.params) == 3 * 64 + 10  # three full epochs, then one full batch


PRESETS = {"a": dict(lr=0.1, epochs=2, milestones=(3, 5)), "b": dict(lr=0.01, epochs=4, milestones=(1,), extra=True)}
DECLARATIONS = (HParam("lr", "float", None, optional=True), HParam("epochs", "int", None, optional=True),
                HParam("milestones", "ints", None, optional=True), HParam("bn_train", "bool", None, optional=True))


def test_resolve_preset_fills_none_fields_from_the_preset_and_keeps_key_order():
  hp = toolkit.resolve_preset("demo preset", PRESETS, "a", dict(lr=None, epochs=5, milestones=[7], bn_train=None),
                              defaults=dict(bn_train=True, lr=9.0), declarations=DECLARATIONS)
  # defaults first (the preset overrides them), then the preset's own fields; overrides win over both
  assert hp == {"bn_train": True, "lr": 0.1, "epochs": 5, "milestones": (7,)}
  assert list(hp) == ["bn_train", "lr", "epochs", "milestones"]
  assert isinstance(hp["milestones"], tuple)  # a declared sequence is stored as the presets write it
  other = toolkit.resolve_preset("demo preset", PRESETS, "b", {"new": 3})
  assert other == {"lr": 0.01, "epochs": 4, "milestones": (1,), "extra": True, "new": 3}
  assert PRESETS["a"] == dict(lr=0.1, epochs=2, milestones=(3, 5))  # the table itself is never changed
  with pytest.raises(ValueError, match=r"^unknown demo preset 'c'; expected one of \['a', 'b'\]$"):
    toolkit.resolve_preset("demo preset", PRESETS, "c", {})


@pytest.mark.parametrize("name, preset, overrides, expected", [
    ("finetune", "scrub-repo", dict(epochs=2), dict(l2_init=0.1, bn_train=False, lr=0.01, epochs=2)),
    ("finetune", "kaggle", dict(bn_train=False), dict(l2_init=0.0, bn_train=False, lr=1e-3, epochs=1)),
    ("scrub", "small-scale", dict(decay_epochs=[2, 4]), dict(decay_epochs=(2, 4), optimizer="adam", epochs=10)),
    ("neggrad_plus", "MIA", dict(beta=0.5), dict(beta=0.5)),
])
def test_built_in_methods_record_the_resolved_preset(name, preset, overrides, expected, tiny):
  method = METHODS[name](tiny, preset=preset, **overrides)
  hp = method.hyperparameters
  assert hp["preset"] == preset
  assert {k: hp[k] for k in expected} == expected
  with pytest.raises(ValueError, match=f"unknown {name} preset 'nope'"):
    METHODS[name](tiny, preset="nope")
