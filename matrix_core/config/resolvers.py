"""The interpolations Matrix adds to its config files: ``${matrix.cores:}``, the CPUs this process may run on (its
affinity, so a run pinned to some cores counts those), for settings that scale with the machine the run starts on,
such as ``agents.<role>.replicas`` of a CPU-bound role."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def register() -> None:
    """Make ``${matrix.cores:}`` known to OmegaConf (once per process)."""
    if not OmegaConf.has_resolver("matrix.cores"):
        OmegaConf.register_resolver("matrix.cores", cores)
