"""The core's config sections as dataclasses: omegaconf types them, and each one's ``check()`` refuses the values
its types let through but a run cannot use (see :mod:`matrix_core.config.checks`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from matrix_core.config.checks import ConfigProblem, at_least

AUTO = "auto"
"""``run.max_concurrency`` / ``backend.max_concurrency``: each backend server's limit found while the run goes."""


@dataclass
class BackendConfig:
    """``backend.*``: which LLM backend serves the agents, and where. Backends extend it with their options."""

    type: str = "local"
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    max_concurrency: int | str | None = None
    """Requests this backend's server gets at once, shared by every role that uses it: a number, or ``auto`` (the
    run finds it, see docs/engine.md); null: as ``run.max_concurrency`` says."""
    price_in: float | None = None
    """Price of a million prompt tokens, in your currency: with it, the run shows and records its cost."""
    price_out: float | None = None
    """Price of a million completion tokens."""

    def check(self) -> None:
        """A concurrency the run can use, prices that are not negative; a backend's schema adds its rules after
        ``super().check()``."""
        check_concurrency("max_concurrency", self.max_concurrency)
        at_least("price_in", self.price_in, 0)
        at_least("price_out", self.price_out, 0)


class Routing(Enum):
    """How an actor picks which actor of the next role receives a task (see docs/engine.md)."""

    least_loaded = "least_loaded"
    round_robin = "round_robin"
    sticky = "sticky"


@dataclass
class AgentConfig:
    """``agents.<role>.*``: how many actors serve a role, how many steps each runs at once, its backend."""

    replicas: int = 1
    max_in_flight: int | None = None
    """Steps one actor runs at once; null: as many as the run can have in flight, so that ``run.max_concurrency``
    alone sets how many requests the backends see. A number caps it (the run says so when the cap binds)."""
    routing: Routing = Routing.least_loaded
    backend: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """At least one actor, and at least one step at a time when capped. An agent's schema that adds its own
        rules calls ``super().check()`` first."""
        at_least("replicas", self.replicas, 1)
        at_least("max_in_flight", self.max_in_flight, 1)


@dataclass
class RunConfig:
    """``run.*``: how the run is driven."""

    max_concurrency: int | str = 256
    """Tasks in flight at once, or ``auto``: each backend server's requests in flight set by a limiter that
    measures its latency (tasks in flight then up to ``concurrency_ceiling``)."""
    min_concurrency: int = 1
    """With ``auto``: the fewest requests a server is left at."""
    concurrency_ceiling: int = 4096
    """With ``auto``: the most requests a server is given, and the most tasks in flight."""
    seed: int = 0
    limit: int | None = None
    resume: bool = False
    retry_errors: bool = False
    """With ``resume``: run again the tasks whose records ended ``error`` (their records are replaced)."""
    force: bool = False
    """With ``resume``: go on even if the input or the settings changed since the run began (``<stem>.run.json``)."""
    partitions: int = 1
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    offload_threshold_bytes: int = 65536
    coalesce: bool = True
    coalesce_window_ms: float = 0.0
    quiet: bool = False
    outage_timeout_s: float = 600.0
    """How long a backend may fail every request (admission paused, steps waiting) before the run stops,
    resumable; 0 stops at once."""
    stall_timeout_s: float = 600.0
    """How long a run may go with no task finished and no step completed (a backend outage aside) before it stops,
    naming where its tasks are held, resumable; 0 never stops it."""
    gc_threshold: int = 50_000
    """Allocations between the garbage collector's young collections in every agent and collector actor (CPython's
    default is 700), each of which also freezes what it holds once started; 0 leaves Python's settings (see
    docs/engine.md)."""

    def check(self) -> None:
        """Counts and timeouts a run can work with."""
        check_concurrency("max_concurrency", self.max_concurrency)
        at_least("min_concurrency", self.min_concurrency, 1)
        at_least("concurrency_ceiling", self.concurrency_ceiling, self.min_concurrency)
        at_least("limit", self.limit, 0)
        at_least("partitions", self.partitions, 1)
        at_least("max_retries", self.max_retries, 0)
        at_least("stall_timeout_s", self.stall_timeout_s, 0)
        at_least("gc_threshold", self.gc_threshold, 0)

    @property
    def adaptive(self) -> bool:
        """Whether ``max_concurrency`` is ``auto``."""
        return self.max_concurrency == AUTO

    @property
    def tasks_in_flight(self) -> int:
        """How many tasks one partition keeps in flight: ``max_concurrency``, or with ``auto`` the ceiling (the
        limiters then hold requests, not tasks, below it)."""
        return self.concurrency_ceiling if self.adaptive else int(self.max_concurrency)


def check_concurrency(key: str, value: int | str | None) -> None:
    """A concurrency is a positive number or ``auto``."""
    if isinstance(value, str) and value != AUTO:
        raise ConfigProblem(key, f"must be a number or {AUTO}, got {value!r}")
    if isinstance(value, int):
        at_least(key, value, 1)


@dataclass
class HubConfig:
    """``input.hf.*``: which part of a dataset read by name (``input.path=hf://OWNER/NAME``)."""

    config: str | None = None
    """The dataset's configuration (subset), if it has several."""
    split: str = "train"
    revision: str | None = None
    """A branch, tag or commit of the dataset's repository: pin one so that ``--resume`` reads the same rows."""


@dataclass
class InputConfig:
    """``input.*``: where tasks come from and how each gets its id."""

    path: str | None = None
    format: str | None = None
    id_key: str = "id"
    skip_bad_rows: bool = False
    hf: HubConfig = field(default_factory=HubConfig)


@dataclass
class OutputConfig:
    """``output.*``: where records go (default: ``<workflow><sink suffix>`` in the current directory)."""

    path: str | None = None
    sink: str = "jsonl"
    fsync_interval_s: float = 5.0
    """Seconds between two ``fsync`` of the output and the files beside it (each record is flushed at once, and every
    file is synced at close): what a power loss may cost at most. 0 syncs after every batch of records."""
