"""Evaluations of scored populations: U-LiRA and KLOM, bootstrap intervals, the ceiling, the no-op
check, paired comparison and stability over N.

Layer: host NumPy on populations the protocol (or a populations file) provides. It may import
``metrics``, ``checkpoint`` and :mod:`unlearn_jax.results`; never ``protocol``, ``api``,
``sweep``, ``cli`` or ``commands``.
"""
