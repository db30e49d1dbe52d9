"""The competition entries together (``docs/algorithms.md`` §6.11–6.19): the registry, the documented
options of each, and the ResNet-18 layer rules of kookmin and sun (slow)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.methods.support import flat, run
from unlearn_jax.models import get_model
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import METHODS, ModelState, SetSizes, kookmin, sun


ENTRIES = ("fanchuan", "kookmin", "seif", "oleszko", "conv_transpose", "amnesiacs", "sun", "forget_cycles",
           "random_mask")


def test_registry_holds_every_entry_with_positive_cost(tiny):
  for name in ENTRIES:
    method = METHODS[name](tiny)
    assert method.name == name
    assert method.source
    assert method.cost(SetSizes(retain=1000, forget=100, validation=100)) > 0


@pytest.mark.slow
def test_resnet18_kookmin_and_sun_follow_the_torch_layer_rules(data):
  model = get_model("resnet18", 10, conv_impl="gemm")
  params, stats = init_variables(model, jax.random.key(0), data.image_shape)
  state = ModelState(params, stats)
  result = run(kookmin.make(model, epochs=1, lr=0.0), state, data)
  got, orig = flat(result.state.params), flat(params)
  convs = [n for n, x in orig.items() if x.ndim == 4]
  assert len(convs) == 20 and "layer3_0/downsample_conv/kernel" in convs
  fractions = np.asarray(result.metrics["reinit_fraction"])
  for j, n in enumerate(convs):
    want = int(round(0.3 * orig[n].size))
    assert fractions[j] * orig[n].size == pytest.approx(want, abs=0.5)
    # A re-drawn float32 can coincide with the value it replaces (≈1e-7 per entry), hence the slack.
    assert want - 3 <= (got[n] != orig[n]).sum() <= want
  for n in ("fc/kernel", "layer2_0/downsample_bn/scale", "bn1/bias"):
    np.testing.assert_array_equal(got[n], orig[n])
  out = run(sun.make(model, lrs=(2e-4, 2e-4)), state, data)
  picked = np.asarray(out.metrics["picked"])
  assert picked.shape == (2, 28) and (picked.sum(1) == 9).all()
  noised = np.asarray(out.metrics["noised"])
  assert noised[0].sum() == 0 and 0 < noised[1].sum() <= 6


@pytest.mark.parametrize("name, options", [
    ("kookmin", dict(mask_scope="global", grad_bn_mode="eval")),
    ("seif", dict(noise_scope="all")),
    ("oleszko", dict(reinit_law="torchvision", fp16=False, amount=0.5)),
    ("amnesiacs", dict(final_kl="symmetric", warmup_classes=(0, 1))),
    ("sun", dict(pool="no_bn", skip_previously_selected=False)),
    ("forget_cycles", dict(variant="B", input_noise=0.0, reinit_law="torch_default")),
    ("random_mask", dict(optimizer="sgd", keep_prob=0.8, pool="no_bn")),
    ("fanchuan", dict(temperature=2.0, retain_batch_size=32)),
])
def test_documented_options_trace_to_the_model_structure(name, options, tiny, trained, data):
  """Each documented option builds and traces (no compile) to a same-structure model."""
  method = METHODS[name](tiny, **options)
  out = jax.eval_shape(method.unlearn, trained, data, jax.random.key(0))
  assert jax.tree.structure(out.state) == jax.tree.structure(trained)
  for got, want in zip(jax.tree.leaves(out.state), jax.tree.leaves(trained)):
    assert got.shape == want.shape and got.dtype == want.dtype


@pytest.mark.parametrize("name, options", [
    ("kookmin", dict(mask_scope="everywhere")), ("seif", dict(noise_scope="body")),
    ("amnesiacs", dict(final_kl="reverse")), ("sun", dict(pool="bn")), ("forget_cycles", dict(variant="C")),
    ("random_mask", dict(optimizer="rmsprop")), ("oleszko", dict(amount=1.5)),
    ("kookmin", dict(lr_factor_table=(1.0,), epochs=3)),
])
def test_bad_options_raise_value_errors_naming_the_argument(name, options, tiny):
  with pytest.raises(ValueError, match=next(iter(options))):
    METHODS[name](tiny, **options)
