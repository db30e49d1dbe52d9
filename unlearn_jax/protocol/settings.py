"""Checks of settings that must hold before any work starts, and the upper bounds on resampling work.

Each function raises a one-line ``ValueError`` naming the setting, the bound and why.
The bounds keep a typo from allocating terabytes or running for days:

* ``--bootstrap B``: ``2 <= B <= MAX_BOOTSTRAP_DRAWS`` and ``B * N <= MAX_BOOTSTRAP_INDICES``
  (the two ``[B, N]`` int64 index arrays of the model bootstrap: 320 MB at the bound;
  the draws' metric work grows as ``B * N * E`` on top);
* ``compare --draws D``: ``2 <= D <= MAX_COMPARE_DRAWS`` and ``D * E <= MAX_COMPARE_CELLS``
  (the ``[D, E]`` index and value arrays of the paired bootstrap, 16 bytes a cell: 1.6 GB
  at the bound);
* ``compare --permutations P``: ``P <= MAX_COMPARE_PERMUTATIONS`` and ``P * E <=
  MAX_PERMUTATION_COLUMNS`` (each split scores ``2E`` metric columns, as bootstrap draws:
  ~0.35 CPU ms each at N = 64 and ~0.6 at N = 512 on the 2-core CPU, under an hour at the
  bound; memory is bounded by scoring the splits in blocks);
* ``stability --repeats R``: ``1 <= R <= MAX_REPEATS`` and ``R * M * N * E <=
  MAX_STABILITY_CELLS`` (M methods: the two ``[n, M * R * E]`` float64 subsample matrices
  scored in one metric call, 1.6 GB at the bound).
"""

from __future__ import annotations

from typing import Any

MAX_BOOTSTRAP_DRAWS = 100_000
MAX_BOOTSTRAP_INDICES = 20_000_000
MAX_COMPARE_DRAWS = 100_000
MAX_COMPARE_CELLS = 100_000_000
MAX_COMPARE_PERMUTATIONS = 100_000
MAX_PERMUTATION_COLUMNS = 2_000_000
MAX_REPEATS = 10_000
MAX_STABILITY_CELLS = 100_000_000


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _count(flag: str, value: Any, minimum: int, maximum: int) -> int:
  """``value`` of ``flag`` checked to be an integer in ``[minimum, maximum]`` (one-line errors)."""
  if not _is_int(value) or value < minimum:
    raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")
  if value > maximum:
    raise ValueError(f"{flag} {value} exceeds the bound of {maximum:,}")
  return value


def check_eval_config(config) -> None:
  """Settings of an :class:`~unlearn_jax.protocol.config.EvalConfig` that cannot work together.

  KLOM's retain and held-out margins are measured from the retrained models' cached
  parameters, so ``--metrics klom`` needs ``cache_params`` (refused here, not after the run).
  """
  if "klom" in tuple(config.metrics) and not config.cache_params:
    raise ValueError("--metrics klom measures the retrained models' margins from their cached parameters; it "
                     "needs cache_params=true (drop --set cache_params=false, or leave klom out)")


def check_bootstrap(draws: Any, num_models: int) -> int:
  """``draws`` (``0``: no bootstrap) checked against the bounds above for N = ``num_models``."""
  if not _is_int(draws) or draws == 1 or draws < 0:
    raise ValueError(f"--bootstrap must be an integer >= 2 (draws), got {draws!r}")
  if draws > MAX_BOOTSTRAP_DRAWS:
    raise ValueError(f"--bootstrap {draws} exceeds the bound of {MAX_BOOTSTRAP_DRAWS:,} draws")
  if _is_int(num_models) and draws * num_models > MAX_BOOTSTRAP_INDICES:
    raise ValueError(f"--bootstrap {draws} at N = {num_models} needs {draws * num_models:,} resampled model indices "
                     f"per population; the bound is B x N <= {MAX_BOOTSTRAP_INDICES:,} "
                     f"(B <= {MAX_BOOTSTRAP_INDICES // num_models:,} at this N)")
  return draws


def check_compare_draws(draws: Any, num_examples: int) -> int:
  """``compare --draws`` checked against the bounds above for E = ``num_examples`` forget examples."""
  _count("--draws", draws, 2, MAX_COMPARE_DRAWS)
  if draws * num_examples > MAX_COMPARE_CELLS:
    raise ValueError(f"--draws {draws} over {num_examples} examples needs {draws * num_examples:,} resampled cells; "
                     f"the bound is draws x examples <= {MAX_COMPARE_CELLS:,} "
                     f"(draws <= {MAX_COMPARE_CELLS // num_examples:,} here)")
  return draws


def check_compare_permutations(permutations: Any, num_examples: int) -> Any:
  """``compare --permutations`` (``None``: the default) checked against the bounds above for E = ``num_examples``."""
  if permutations is None:
    return None
  _count("--permutations", permutations, 1, MAX_COMPARE_PERMUTATIONS)
  if permutations * num_examples > MAX_PERMUTATION_COLUMNS:
    raise ValueError(f"--permutations {permutations} over {num_examples} examples scores "
                     f"{2 * permutations * num_examples:,} metric columns; the bound is permutations x examples <= "
                     f"{MAX_PERMUTATION_COLUMNS:,} (permutations <= {MAX_PERMUTATION_COLUMNS // num_examples:,} here)")
  return permutations


def check_repeats(repeats: Any, num_methods: int, num_models: int, num_examples: int) -> int:
  """``stability --repeats`` checked against the bounds above for M methods, N models and E examples."""
  _count("--repeats", repeats, 1, MAX_REPEATS)
  cells = repeats * num_methods * num_models * num_examples
  if cells > MAX_STABILITY_CELLS:
    per = max(1, num_methods * num_models * num_examples)
    raise ValueError(f"--repeats {repeats} for {num_methods} methods at N = {num_models}, E = {num_examples} needs "
                     f"{cells:,} subsampled confidences per population; the bound is R x M x N x E <= "
                     f"{MAX_STABILITY_CELLS:,} (R <= {MAX_STABILITY_CELLS // per:,} here)")
  return repeats
