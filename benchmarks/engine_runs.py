"""Running a workflow through the engine in this process, as ``matrix run`` does, for the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import matrix_core


def run(workflow: str, overrides: Sequence[str]) -> matrix_core.RunMetrics:
    """Run ``workflow`` with ``KEY=VALUE`` overrides to the end in the running Ray (the public Python API, the same
    path as ``matrix run``), return its metrics; a task that did not succeed is an error (a benchmark must not
    time failures)."""
    metrics = matrix_core.run(workflow, overrides=overrides)
    if metrics.status != {"success": metrics.tasks}:
        raise RuntimeError(f"{workflow}: not every task succeeded: {metrics.status}")
    return metrics
