"""The limits below ``run.max_concurrency``: per-actor steps, client connections, engine servers' own batch sizes.

``run.max_concurrency`` is what the user asked to have in flight; nothing in the engine holds a run below it unless
the user (or a backend's own server) set a number that does. Each such number is a :class:`Cap`: the run names it
once when it starts, and its metrics say whether the run reached it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from matrix_core.config.schemas import AUTO

ENGINE_LIMITS = ("max_num_seqs", "max_running_requests")
"""Engine arguments that bound the requests one vLLM / SGLang server runs at once."""


@dataclass(frozen=True)
class Cap:
    """A setting that lets ``role`` have at most ``limit`` requests (or steps) at once, below ``asked``.

    ``per_actor`` is the same limit for one agent actor, compared with the most steps an actor ran at once to tell
    whether the run reached it."""

    role: str
    setting: str
    limit: int
    asked: int
    per_actor: int

    def __str__(self) -> str:
        return (
            f"{self.setting} lets role {self.role!r} have {self.limit} at once, "
            f"{self.limit / self.asked:.0%} of the {self.asked} in flight that run.max_concurrency asks"
        )

    def reached(self, most_steps_at_once: int) -> bool:
        """Whether an actor of the role ran as many steps at once as the cap allows (or more, for connections)."""
        return most_steps_at_once >= self.per_actor


def caps(config: DictConfig, role_backends: Mapping[str, DictConfig]) -> list[Cap]:
    """The caps of a resolved run, each role's tightest first; none with ``run.max_concurrency=auto``, where the
    run reports each server's limit instead."""
    if config.run.max_concurrency == AUTO:
        return []
    asked = config.run.max_concurrency * config.run.partitions
    found = []
    for role, backend in role_backends.items():
        agent = config.agents[role]
        actors = agent.replicas
        options: list[tuple[int, int, str]] = []  # (limit, per actor, setting)
        if agent.max_in_flight is not None:
            setting = f"agents.{role}.max_in_flight={agent.max_in_flight} (x {actors} actors)"
            options.append((agent.max_in_flight * actors, agent.max_in_flight, setting))
        connections = _get(backend, "max_connections")
        if connections is not None:
            servers = _get(backend, "replicas", 1) if _get(backend, "engine_args") is not None else 1
            per_actor = connections * servers
            setting = f"backend.max_connections={connections} (x {actors} actors" + (
                f" x {servers} engine replicas)" if servers > 1 else ")"
            )
            options.append((per_actor * actors, per_actor, setting))
        engine_args = _get(backend, "engine_args") or {}
        for key in ENGINE_LIMITS:
            if key in engine_args:
                servers = _get(backend, "replicas", 1)
                limit = int(engine_args[key]) * servers
                options.append((limit, limit, f"backend.engine_args.{key}={engine_args[key]} (x {servers} replicas)"))
        found += [Cap(role, setting, limit, asked, per_actor) for limit, per_actor, setting in options if limit < asked]
    return sorted(found, key=lambda cap: (cap.role, cap.limit))


def _get(node: Any, key: str, default: Any = None) -> Any:
    value = node.get(key, default) if hasattr(node, "get") else default
    return default if value is None else value
