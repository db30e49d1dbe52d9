"""The evaluation protocol: configuration, context, the chunked stage runner, the stages, scoring, the run.

Layer: above :mod:`unlearn_jax.results` and :mod:`unlearn_jax.analysis`, below
:mod:`unlearn_jax.api`, :mod:`unlearn_jax.sweep` and the commands. It may import the
foundation packages (``data``, ``models``, ``training``, ``unlearning``, ``metrics``),
the mechanism modules (``seeds``, ``checkpoint``, ``compile_cache``, ``plugins``,
``configs``, the strategy tuner), ``results`` and ``analysis``; never ``api``,
``sweep``, ``cli`` or ``commands``.
"""
