"""The ``tau2`` sink: the records as JSON Lines and, when the run ends, tau2's own result files beside them.

- ``<stem>.<domain>.tau2.json``: tau2's ``Results`` (info, tasks, simulations) for each domain in the output, which
  tau2's viewer and metrics read (``tau2 view``, ``tau2.metrics.agent_metrics.compute_metrics``);
- ``<stem>.tau2-metrics.json``: per domain, tau2's average reward and pass^k (k up to the trials every task has),
  the number of simulations per termination reason, and tokens per role.

They are rebuilt from the whole output each time, so a run continued with ``--resume`` reports all of it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from matrix_core import JsonlSink, companion
from matrix_tau2 import catalog


class Tau2Sink(JsonlSink):
    """JSON Lines records; at close, tau2's ``Results`` and metrics files (see the module)."""

    suffix = ".jsonl"

    def close(self) -> None:
        super().close()
        if self.path.exists():
            export(self.path)


def export(path: Path) -> dict[str, Path]:
    """Write tau2's result files for the records in ``path``; returns each domain's ``Results`` file."""
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in _records(path):
        by_domain[record["domain"]].append(record)
    written, metrics = {}, {}
    for domain, records in sorted(by_domain.items()):
        results = to_results(domain, records)
        target = companion(path, f"{domain}.tau2.json")
        target.write_text(results.model_dump_json(indent=2))
        written[domain] = target
        metrics[domain] = summary(results, records)
    companion(path, "tau2-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return written


def to_results(domain: str, records: list[dict[str, Any]]) -> Any:
    """tau2's ``Results`` for one domain's records. A task that ended without a reward (its step failed in the
    engine) counts as reward 0, as tau2's runner counts a failed sample."""
    from tau2.data_model.simulation import AgentInfo, Info, Results, RewardInfo, SimulationRun, UserInfo
    from tau2.environment.environment import EnvironmentInfo
    from tau2.user.user_simulator import get_global_user_sim_guidelines

    simulations = []
    for record in records:
        simulation = SimulationRun.model_validate(record)
        if simulation.reward_info is None:
            note = f"no reward: the task ended {record['status']}: {record['reason']}"
            simulation.reward_info = RewardInfo(reward=0.0, info={"note": note})
        simulations.append(simulation)
    first = records[0]
    task_ids = list(dict.fromkeys(record["task_id"] for record in records))
    info = Info(
        git_commit=f"matrix-tau2 {version('matrix-tau2')}",
        num_trials=max((record.get("trial") or 0) for record in records) + 1,
        max_steps=first["max_steps"],
        max_errors=first["max_errors"],
        user_info=UserInfo(
            implementation="matrix_tau2.agents:UserSimulator",
            llm=_model(records, "user"),
            global_simulation_guidelines=get_global_user_sim_guidelines(),
        ),
        agent_info=AgentInfo(implementation="matrix_tau2.agents:Assistant", llm=_model(records, "assistant")),
        environment_info=EnvironmentInfo.model_validate(catalog.domain_info(domain).environment_info),
    )
    tasks = [catalog.task(domain, task_id) for task_id in task_ids]
    return Results(info=info, tasks=tasks, simulations=simulations)


def _model(records: list[dict[str, Any]], role: str) -> str | None:
    """The model ``role`` ran on: the first record that names one (a task that failed before any call names none)."""
    return next((record["models"][role] for record in records if record.get("models", {}).get(role)), None)


def summary(results: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """tau2's metrics of ``results`` plus counts per termination reason and tokens per role."""
    from tau2.metrics.agent_metrics import compute_metrics

    tokens: Counter[str] = Counter()
    for record in records:
        tokens.update(record["tokens"])
    return {
        "simulations": len(records),
        "tasks": len({record["task_id"] for record in records}),
        **compute_metrics(results).as_dict(),
        "termination": dict(Counter(record["termination_reason"] for record in records)),
        "tokens": dict(sorted(tokens.items())),
    }


def _records(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as file:
        return [json.loads(line) for line in file if line.endswith(b"\n")]  # a torn last line is not a record
