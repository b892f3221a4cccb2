"""The garbage collector's settings in the engine's actors (``run.gc_threshold``).

Under CPython's default thresholds (700, 10, 10) a process that builds many objects at once runs dozens of young
collections and, every few thousand allocations more, a full collection over everything it holds: its imports,
its caches, every task in flight. Measured on tau2's environments (tens of thousands of objects each), that was
most of a task's CPU (an environment built in 87 ms instead of 31). So each actor, once started, collects once,
moves what it holds to the permanent generation (``gc.freeze``: full collections no longer walk it) and collects
young objects every ``run.gc_threshold`` allocations instead of 700; the older generations keep their ratios.
Objects without reference cycles are freed at once whatever the thresholds, so only cyclic garbage waits longer.
"""

from __future__ import annotations

import gc

OLDER = (20, 10)
"""Young collections per middle one, middle per full: as often, relative to the young ones, as tau2 measured best."""


def settle(threshold: int) -> None:
    """Apply ``run.gc_threshold`` to this process (0: leave Python's settings as they are)."""
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, *OLDER)
