"""What an evaluation leaves behind: the results record, ``results.json``, ``populations.npz``,
the stored ceilings, setups (which results compare), progress lines, tables and plots.

Layer: the lowest of the orchestration layers. It may import ``checkpoint``, ``metrics`` and
the Python standard library, NumPy and matplotlib; never ``analysis``, ``protocol``, ``api``,
``sweep``, ``cli`` or ``commands``.
"""
