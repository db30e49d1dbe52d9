"""Metrics: logit-scaled confidence, forgetting quality and its bootstrap, final score, simple MIA, U-LiRA, KLOM."""

from unlearn_jax.metrics.bootstrap import ModelBootstrap as ModelBootstrap
from unlearn_jax.metrics.bootstrap import example_bootstrap as example_bootstrap
from unlearn_jax.metrics.bootstrap import interval as interval
from unlearn_jax.metrics.bootstrap import model_bootstrap as model_bootstrap
from unlearn_jax.metrics.confidence import logit_scaled_confidence as logit_scaled_confidence
from unlearn_jax.metrics.klom import klom as klom
from unlearn_jax.metrics.klom import klom_summary as klom_summary
from unlearn_jax.metrics.mia import fit_logistic_regression as fit_logistic_regression
from unlearn_jax.metrics.mia import simple_mia as simple_mia
from unlearn_jax.metrics.privacy import MetricResult as MetricResult
from unlearn_jax.metrics.privacy import epsilon_points as epsilon_points
from unlearn_jax.metrics.privacy import epsilon_table as epsilon_table
from unlearn_jax.metrics.privacy import forgetting_metric as forgetting_metric
from unlearn_jax.metrics.privacy import forgetting_quality as forgetting_quality
from unlearn_jax.metrics.privacy import num_buckets as num_buckets
from unlearn_jax.metrics.privacy import per_example_epsilons as per_example_epsilons
from unlearn_jax.metrics.ulira import ulira as ulira
from unlearn_jax.metrics.utility import accuracy as accuracy
from unlearn_jax.metrics.utility import final_score as final_score
