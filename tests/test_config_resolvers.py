"""${matrix.cores:}: the CPUs the run may use, for settings that scale with the machine (a CPU-bound role's actors)."""

from __future__ import annotations

import os
import subprocess
import sys

from omegaconf import OmegaConf

import matrix_core.config  # noqa: F401 - registers the resolvers
from matrix_core.config.resolvers import cores

PINNED = (
    "import os, matrix_core.config; from omegaconf import OmegaConf; os.sched_setaffinity(0, {0}); "
    "print(OmegaConf.create({'n': '${matrix.cores:}'}).n)"
)


def test_cores_counts_the_cpus_this_process_may_run_on():
    assert cores() == len(os.sched_getaffinity(0))
    assert OmegaConf.create({"replicas": "${matrix.cores:}"}).replicas == cores()


def test_a_run_pinned_to_one_core_counts_one():
    done = subprocess.run([sys.executable, "-c", PINNED], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"
