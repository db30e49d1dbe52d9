"""Training: recipes, pure steps, and the single-seed training run."""

from unlearn_jax.training.engine import TrainResult
from unlearn_jax.training.engine import class_weights_for
from unlearn_jax.training.engine import make_train_fn
from unlearn_jax.training.engine import run_epoch
from unlearn_jax.training.losses import cross_entropy
from unlearn_jax.training.losses import kl_divergence
from unlearn_jax.training.losses import per_example_cross_entropy
from unlearn_jax.training.recipes import RECIPES
from unlearn_jax.training.recipes import Recipe
from unlearn_jax.training.recipes import competition_recipe
from unlearn_jax.training.recipes import digits_recipe
from unlearn_jax.training.recipes import learning_rate_fn
from unlearn_jax.training.recipes import make_optimizer
from unlearn_jax.training.recipes import per_epoch_cosine
from unlearn_jax.training.recipes import starting_kit_recipe
from unlearn_jax.training.recipes import steps_per_epoch
from unlearn_jax.training.recipes import torch_optimizer
from unlearn_jax.training.state import TrainState
from unlearn_jax.training.state import init_variables
from unlearn_jax.training.steps import accuracy
from unlearn_jax.training.steps import apply_eval
from unlearn_jax.training.steps import apply_train
from unlearn_jax.training.steps import crop_flip
from unlearn_jax.training.steps import make_predict_fn
from unlearn_jax.training.steps import make_train_step
