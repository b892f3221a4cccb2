"""Running a workflow through the engine in this process, as ``matrix run`` does, for the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def run(workflow: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Resolve ``workflow`` with ``KEY=VALUE`` overrides, run it to the end in the running Ray, return its metrics;
    a task that did not succeed is an error (a benchmark must not time failures)."""
    from matrix_core import config
    from matrix_core.engine.run import run_workflow
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    resolved = config.resolve(registry.get("orchestrators", workflow), registry, config.parse_overrides(overrides))
    metrics = run_workflow(resolved, registry)
    if metrics["status"] != {"success": metrics["tasks"]}:
        raise RuntimeError(f"{workflow}: not every task succeeded: {metrics['status']}")
    return metrics
