"""What a run did, as one typed record: written to ``<output stem>.metrics.json``, returned by
:func:`matrix_core.run`, and passed to :meth:`~matrix_core.Orchestrator.summary`. Part of the plugin contract."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CapReport:
    """A setting that caps how many steps a role runs at once below what ``run.max_concurrency`` asks."""

    role: str
    setting: str
    """The capping setting, e.g. ``agents.teacher.max_in_flight=8``."""
    limit: int
    """How many steps at once the cap allows the role."""
    asked: int
    """What ``run.max_concurrency`` (times ``run.partitions``) asks."""
    reached: bool
    """Whether the role ran ``limit`` steps at once during the run: the cap held it back."""


@dataclass(frozen=True)
class ConcurrencyReport:
    """How many requests one backend server got at once over the run."""

    server: str
    """The server, as ``<base_url> (<model>)``."""
    mode: str
    """``auto`` (found while the run went) or the fixed number set."""
    limit: int
    """The limit at the end of the run."""
    history: list[list[float | None]] = field(default_factory=list)
    """``[seconds since the run started, limit, latency in seconds per output token or null]`` points."""


@dataclass(frozen=True)
class EngineCounters:
    """What the engine counted of the run besides the finished tasks (the driver's and the actors' counters)."""

    admitted: int = 0
    """Tasks started (re-admissions not counted)."""
    skipped_finished: int = 0
    """Tasks skipped because ``--resume`` found them finished."""
    readmitted: int = 0
    """Tasks started again because the actor holding them died."""
    peak_in_flight: int = 0
    """Most tasks one partition had in flight at once."""
    retries: int = 0
    """Steps tried again after a failure (``run.max_retries`` per step)."""
    rerouted: int = 0
    """Tasks re-sent because their receiver died before accepting them."""
    offloaded_texts: int = 0
    """History texts moved to Ray's object store (``run.offload_threshold_bytes``)."""
    most_steps_at_once: dict[str, int] = field(default_factory=dict)
    """Role -> most steps its busiest actor ran at once."""
    caps: list[CapReport] = field(default_factory=list)
    backend_outages: int = 0
    """Times a backend stopped answering and admission paused."""
    paused_s: float = 0.0
    """Seconds admission was paused for backend outages."""
    flow_time_s: float = 0.0
    """Seconds from the first admission to the end, without actor start-up."""
    concurrency: list[ConcurrencyReport] = field(default_factory=list)
    """Each server's limit over the run, where ``max_concurrency`` gave one (``auto`` or a number)."""
    cost: float | None = None
    """What the agents' tokens cost at ``backend.price_in`` / ``price_out`` (roles without a price count 0); None
    when no backend sets a price."""


@dataclass(frozen=True)
class RunMetrics:
    """A run's outcome and throughput. ``status`` counts tasks by status; ``status_reason`` by ``status:reason``
    (``filtered:en``); ``workflow`` averages the numbers each task's :meth:`~matrix_core.Orchestrator.metrics`
    returned over every finished task; ``engine`` holds the engine's own counters. In ``metrics.json`` every field,
    the engine's included, sits at the top level."""

    tasks: int = 0
    """Tasks finished in this run (kept and dropped)."""
    kept: int = 0
    """Tasks whose record went to the output."""
    status: dict[str, int] = field(default_factory=dict)
    status_reason: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    hops: int = 0
    """Steps of the finished tasks, summed."""
    wall_time_s: float = 0.0
    tasks_per_s: float = 0.0
    tokens_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    duplicates_dropped: int = 0
    """Finished tasks delivered twice (after an actor died) and written once."""
    rejected_rows: int = 0
    """Malformed input rows skipped with ``input.skip_bad_rows``."""
    workflow: dict[str, float] = field(default_factory=dict)
    engine: EngineCounters = field(default_factory=EngineCounters)
    cost_per_kept_record: float | None = None
    """The run's cost over its kept records (None without prices, or with no record kept)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``metrics.json``."""
        values = dataclasses.asdict(self)
        return {**values, **values.pop("engine")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMetrics:
        """Read what :meth:`to_json` wrote; keys this version does not know are ignored (a newer writer's)."""
        engine = {key: data[key] for key in _names(EngineCounters) if key in data}
        engine["caps"] = [CapReport(**cap) for cap in engine.get("caps", [])]
        engine["concurrency"] = [ConcurrencyReport(**each) for each in engine.get("concurrency", [])]
        own = {key: data[key] for key in _names(cls) - {"engine"} if key in data}
        return cls(**own, engine=EngineCounters(**engine))


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
