"""The public import surface."""

import unlearn_jax
from unlearn_jax import metrics, unlearning


def test_version_and_subpackages():
  assert unlearn_jax.__version__ == "0.1.0"
  for name in ("data", "metrics", "models", "seeds", "training", "unlearning"):
    assert hasattr(unlearn_jax, name)


def test_metric_api_names():
  for name in ("logit_scaled_confidence", "per_example_epsilons", "forgetting_quality", "forgetting_metric",
               "final_score", "simple_mia", "MetricResult"):
    assert callable(getattr(metrics, name))


def test_every_competition_method_is_registered():
  expected = {"none", "retrain", "finetune", "neggrad", "neggrad_plus", "scrub", "scrub_noise", "random_label",
              "bad_teacher", "l1_sparse", "salun", "fisher", "fanchuan", "kookmin", "seif", "oleszko",
              "conv_transpose", "amnesiacs", "sun", "forget_cycles", "random_mask"}
  assert set(unlearning.METHODS) == expected
