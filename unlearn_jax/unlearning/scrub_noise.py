"""``scrub_noise``: per-seed weight noise, then SCRUB with the un-noised teacher (``docs/algorithms.md`` §6.5).

1. From the seed key pick a leaf set S (``noise_scope``) and draw ε ~ N(0, σ²)
   on S (σ absolute, or ``relative``: σ_leaf = σ·std(θ₀ leaf)).
2. The student starts at θ₀ + 1_S ⊙ ε with θ₀'s BatchNorm statistics and a
   fresh optimiser state.
3. SCRUB (§6.4, :mod:`unlearn_jax.unlearning.scrub`, MIA preset by default)
   runs from there; the teacher stays at the un-noised θ₀ (params and stats).
   With ``reinject_sigma > 0`` a second, smaller draw on S is added before the
   last epoch (as Seif's entry does).

Scopes: ``conv`` (all conv kernels), ``stem`` (the first conv kernel in tree
order), ``non_bn`` (every non-BatchNorm tensor), ``random_k`` (``k`` non-BN
tensors drawn without replacement from the key; the default, σ 0.04 as in
Sun's entry).

Source: a composition of SCRUB (Kurmanji et al., arXiv 2302.09880,
``meghdadk/SCRUB``) with the weight-perturbation steps of the NeurIPS 2023
unlearning competition entries by Seif Achour (Kaggle 459334) and Sun
(Kaggle 459095); there is no reference implementation.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from unlearn_jax import _validate
from unlearn_jax.unlearning import toolkit, scrub
from unlearn_jax.unlearning.base import ModelState, UnlearningMethod
from unlearn_jax.unlearning.hparams import HParam

SCOPES = ("random_k", "conv", "stem", "non_bn")
SMALL_OVERRIDES = dict(scrub.SMALL_OVERRIDES, k=2)
GATE_STREAM, NOISE_STREAM = 0, 1


def noise_gates(params, scope: str, k: int, key: jax.Array):
  """A pytree of float32 scalars like ``params``: 1 on the leaves of S, 0 elsewhere.

  Only ``random_k`` uses ``key`` (``choice`` without replacement over the
  static list of non-BN leaves, so shapes stay static under a vmap).
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  non_bn = [i for i, (p, x) in enumerate(flat) if not toolkit.is_batchnorm(p, x)]
  if scope == "random_k":
    if not 1 <= k <= len(non_bn):
      raise ValueError(f"k must lie in [1, {len(non_bn)}] (the number of non-BN tensors), got {k}")
    picked = jax.random.choice(key, len(non_bn), (k,), replace=False)
    hit = jnp.zeros((len(non_bn),), jnp.float32).at[picked].set(1.0)
    gates = [jnp.zeros((), jnp.float32)] * len(flat)
    for j, i in enumerate(non_bn):
      gates[i] = hit[j]
    return jax.tree.unflatten(treedef, gates)
  if scope == "conv":
    chosen = {i for i, (p, x) in enumerate(flat) if toolkit.is_conv_kernel(p, x)}
  elif scope == "stem":
    convs = [i for i, (p, x) in enumerate(flat) if toolkit.is_conv_kernel(p, x)]
    chosen = set(convs[:1])
  else:
    chosen = set(non_bn)
  if not chosen:
    raise ValueError(f"noise_scope {scope!r} selects no parameter of this model")
  return jax.tree.unflatten(treedef, [jnp.asarray(1.0 if i in chosen else 0.0, jnp.float32)
                                      for i in range(len(flat))])


def add_noise(params, gates, sigma: float, relative: bool, key: jax.Array):
  """``params + gate · σ_leaf · ε`` with one independent normal draw per leaf."""

  def one(p, g, k):
    scale = sigma * jnp.std(p) if relative else sigma
    return p + g * scale * jax.random.normal(k, p.shape, p.dtype)

  return jax.tree.map(one, params, gates, toolkit.keys_like(key, params))

HPARAMS = (
    HParam("noise_scope", "str", "random_k", choices=SCOPES, doc="which tensors are noised"),
    HParam("sigma", "float", 0.04, low=0, doc="noise standard deviation (relative to each leaf's std if relative)"),
    HParam("relative", "bool", False, doc="sigma is relative to each leaf's standard deviation"),
    HParam("k", "int", 4, low=1, doc="number of tensors for noise_scope random_k"),
    HParam("reinject_sigma", "float", 0.0, low=0, doc="σ of a second draw before the last epoch (0: none)"),
    HParam("preset", "str", "MIA", choices=tuple(scrub.PRESETS), doc="SCRUB preset"),
    HParam("rewind", "bool", False, doc="SCRUB+R rewind"),
) + tuple(h for h in scrub.HPARAMS if h.name in scrub.HP_NAMES)


def make(model, noise_scope: str = "random_k", sigma: float = 0.04, relative: bool = False, k: int = 4,
         reinject_sigma: float = 0.0, preset: str = "MIA", rewind: bool = False,
         **scrub_hyperparameters: Any) -> UnlearningMethod:
  """SCRUB from a per-seed noised start.

  Args:
    noise_scope: one of :data:`SCOPES`.
    sigma: noise standard deviation (relative to each leaf's std when ``relative``).
    k: number of tensors for ``random_k``.
    reinject_sigma: σ of a second draw on S before the last epoch (0: none).
    preset, rewind, **scrub_hyperparameters: as :func:`unlearn_jax.unlearning.scrub.make`.
  """
  _validate.check_in("noise_scope", noise_scope, SCOPES)
  if sigma < 0 or reinject_sigma < 0:
    raise ValueError(f"sigma and reinject_sigma must be >= 0, got {sigma} and {reinject_sigma}")
  unknown = sorted(set(scrub_hyperparameters) - set(scrub.HP_NAMES))
  if unknown:
    raise ValueError(f"unknown scrub hyperparameters {unknown}; expected some of {list(scrub.HP_NAMES)}")
  hp = scrub.resolve(preset, scrub_hyperparameters)

  def perturb(original: ModelState, key: jax.Array) -> ModelState:
    gates = noise_gates(original.params, noise_scope, k, jax.random.fold_in(key, GATE_STREAM))
    params = add_noise(original.params, gates, sigma, relative, jax.random.fold_in(key, NOISE_STREAM))
    return ModelState(params, original.batch_stats)

  def unlearn(original: ModelState, data, key):
    # scrub.build_unlearn hands perturb fold_in(key, 2); re-deriving the gates from it
    # makes the optional second draw hit the same set S.
    gate_key = jax.random.fold_in(jax.random.fold_in(key, 2), GATE_STREAM)
    again = None
    if reinject_sigma > 0:
      gates = noise_gates(original.params, noise_scope, k, gate_key)
      again = lambda params, kk: add_noise(params, gates, reinject_sigma, relative, kk)
    return scrub.build_unlearn(model, hp, rewind, perturb=perturb, reinject=again)(original, data, key)

  return UnlearningMethod("scrub_noise", unlearn, lambda sizes: scrub.cost(hp, sizes),
                          "SCRUB (arXiv 2302.09880, meghdadk/SCRUB) + noise of Kaggle entries 459334/459095",
                          dict(noise_scope=noise_scope, sigma=sigma, relative=relative, k=k,
                               reinject_sigma=reinject_sigma, preset=preset, rewind=rewind, **hp))
