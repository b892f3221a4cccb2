"""The garbage collector's settings for the processes that build and score tau2 environments.

A parsed domain database is tens of thousands of Python objects (retail: ~40,000), built at once, and a tool
executor holds one per task in flight. With CPython's default thresholds (700, 10, 10) building one triggers dozens
of young collections and, every few environments, a full one over everything the process holds (all of tau2's
tasks and modules, the other environments): ~230 ms each. Measured here on retail, that is most of a task's CPU:
an environment built in 87 ms instead of 31, a simulation scored in 340 ms instead of 150. Environments have no
reference cycles (dropping one frees it at once), so collecting less often costs no memory that matters.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 10)
"""Young collections every 50,000 allocations (not 700); the older generations as often, relative to them."""


def tune() -> None:
    """Collect once, move what the process holds after its imports to the permanent generation (full collections
    no longer walk it), and raise the thresholds. Process-wide: called where the process is the agent's own (a
    Ray actor), and harmless elsewhere."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
