"""Running a workflow: start the actors, let tasks flow peer to peer, watch for dead actors, report."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

import ray
from omegaconf import OmegaConf
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from matrix_core.cluster.connect import RayTarget
from matrix_core.config import InputConfig, ResolvedConfig, RunConfig, redact
from matrix_core.engine import fingerprint
from matrix_core.engine.actor_logs import ActorLogLine, LogRelay
from matrix_core.engine.actors import AgentActor
from matrix_core.engine.caps import caps
from matrix_core.engine.collector import Collector, shards_of
from matrix_core.engine.components import build_config
from matrix_core.engine.concurrency import ConcurrencyController, concurrency_of, server_of
from matrix_core.engine.cost import cost_of, prices_of
from matrix_core.engine.inputs import HUB, read_rows
from matrix_core.engine.messages import ActorStats, AgentSpec, PartitionCounts
from matrix_core.engine.output import OutputLock, check_writable
from matrix_core.engine.progress import ProgressDisplay
from matrix_core.engine.step_times import merged
from matrix_core.engine.timeline import Sample, TimelineRecorder
from matrix_core.engine.writer import Writer
from matrix_core.errors import ConfigError, MatrixError, UsageError
from matrix_core.metrics import CapReport, EngineCounters, RunMetrics
from matrix_core.registry import Registry
from matrix_core.sinks.base import companion
from matrix_core.sinks.jsonl import JsonlSink

logger = logging.getLogger(__name__)

POLL_S = 0.5
LIVENESS_EVERY_S = 2.0

# The engine's classes are plain (unit-tested without Ray); here, where the run creates them, they become actors.
# Agents and collectors serve many tasks at once on their event loops; the writer takes one call at a time.
RemoteAgent = ray.remote(num_cpus=0, max_concurrency=100_000)(AgentActor)
RemoteCollector = ray.remote(num_cpus=0, max_concurrency=100_000)(Collector)
RemoteWriter = ray.remote(num_cpus=0, max_concurrency=1)(Writer)
RemoteController = ray.remote(num_cpus=0)(ConcurrencyController)


class RunInterrupted(MatrixError):
    """The user stopped the run; the output is valid and ``--resume`` continues it."""

    exit_code = 130


class BackendOutage(MatrixError):
    """A backend answered nothing for ``run.outage_timeout_s``: the run stopped, its output valid for ``--resume``."""


class RunStalled(MatrixError):
    """No task finished and no step completed for ``run.stall_timeout_s``: the run stopped, its output valid for
    ``--resume``."""


def check_output(resolved: ResolvedConfig, registry: Registry) -> None:
    """Refuse to start over an existing output unless resuming: a new run must never destroy an earlier one.
    ``--retry-errors`` and ``--force`` only continue a run, and retrying errors needs a sink that removes records.
    An output that cannot be written is refused here, before anything is spent."""
    run = resolved.config.run
    for flag, given in (("--retry-errors", run.retry_errors), ("--force", run.force)):
        if given and not run.resume:
            raise UsageError(f"{flag} continues a run: pass it with --resume")
    sink = registry.get("sinks", resolved.config.output.sink)
    if run.retry_errors and not sink.cls.can_remove():
        raise MatrixError(f"--retry-errors: sink {sink.name!r} ({sink.target}) cannot remove records")
    check_writable(Path(resolved.config.output.path).expanduser())
    if not run.resume and _has_records(resolved, registry):
        raise MatrixError(
            f"{Path(resolved.config.output.path)} exists with finished tasks",
            hint="pass --resume to continue that run, or choose another -o",
        )


def _has_records(resolved: ResolvedConfig, registry: Registry) -> bool:
    """Whether the output (or the dropped file beside it) holds a finished task."""
    output = Path(resolved.config.output.path)
    sink = registry.get("sinks", resolved.config.output.sink).cls(output)
    return any(
        next(iter(records.finished_ids()), None) is not None
        for records in (sink, JsonlSink(companion(output, "dropped.jsonl")))
    )


def run_workflow(resolved: ResolvedConfig, registry: Registry, ray_target: RayTarget | None = None) -> RunMetrics:
    """Run ``resolved`` to the end and return its metrics (also written to ``<stem>.metrics.json``), on
    ``ray_target`` (default: a private local Ray started and stopped by this run) unless Ray is already up. This
    process holds the output's lock (``<stem>.lock``) until it returns: one output, one run."""
    check_output(resolved, registry)
    with OutputLock(Path(resolved.config.output.path).expanduser()):
        run = _Run(resolved, registry)  # checks the backends' config and the input before starting anything
        fingerprint.check_and_record(resolved.config, _has_records(resolved, registry))  # --resume: the same run?
        started_ray = not ray.is_initialized()
        if started_ray:
            (ray_target or RayTarget()).init()
        try:
            return run.execute()
        finally:
            if started_ray:
                ray.shutdown()


class _Run:
    def __init__(self, resolved: ResolvedConfig, registry: Registry) -> None:
        config = resolved.config
        self.config = config
        self.resolved = resolved
        self.workflow = registry.get("orchestrators", resolved.workflow)
        orchestrator = self.workflow.cls
        self.workflow_config = (
            OmegaConf.to_container(config[orchestrator.config_key], resolve=True) if orchestrator.config_key else None
        )
        self.run_config: RunConfig = OmegaConf.to_object(config.run)
        self.agent_specs: dict[str, AgentSpec] = {}
        for role, agent_name in orchestrator.roles.items():
            agent = registry.get("agents", agent_name)
            backend_config = resolved.role_backends[role]
            backend = registry.get("backends", backend_config.type)
            agent_config = OmegaConf.to_container(config.agents[role], resolve=True, enum_to_str=True)
            backend_values = OmegaConf.to_container(backend_config, resolve=True)
            # Constructing a backend only checks its config (base_url, api key variable): fail here, in one line,
            # rather than inside every actor.
            try:
                backend.cls(build_config(backend.cls.config_schema, backend_values))
            except ConfigError as error:
                if config.agents[role].backend and str(error).startswith("backend."):  # name the role's own section
                    raise ConfigError(f"agents.{role}.{error}", hint=error.hint) from None
                raise
            self.agent_specs[role] = AgentSpec(
                role=role,
                agent=agent.target,
                agent_config=agent_config,
                workflow=self.workflow.target,
                workflow_config=self.workflow_config,
                backend=backend.target,
                backend_config=backend_values,
                run=self.run_config,
            )
        self.policies = {role: config.agents[role].routing.value for role in orchestrator.roles}
        self.prices = prices_of(self.agent_specs)
        self.caps = caps(config, resolved.role_backends)
        by_server: dict[str, list[str]] = {}
        for role, spec in self.agent_specs.items():
            by_server.setdefault(server_of(spec.backend_config), []).append(role)
        self.limited_servers = {
            server: (roles, mode)
            for server, roles in by_server.items()
            if (mode := concurrency_of([self.agent_specs[role].backend_config for role in roles], self.run_config))
            is not None
        }
        """Servers whose requests a controller limits: their roles and ``auto`` or the number."""
        self.controllers: dict[str, Any] = {}
        self.paused_since: float | None = None
        self.paused_s = 0.0
        self.outages = 0
        self.sink_target = registry.get("sinks", config.output.sink).target
        input_config: InputConfig = OmegaConf.to_object(config.input)
        if input_config.path is not None and not input_config.path.startswith(HUB):  # actors may run elsewhere
            input_config.path = str(Path(input_config.path).expanduser().absolute())
        read_rows(input_config)  # a missing input or unknown format fails now, before Ray starts
        self.input_config = input_config

    def execute(self) -> RunMetrics:
        config = self.config
        output = str(Path(config.output.path).expanduser().absolute())
        writer = RemoteWriter.remote(self.sink_target, output, config.output.fsync_interval_s)
        agents: dict[str, list[Any]] = {}
        collectors: list[Any] = []
        counts: list[PartitionCounts] = []
        display = None
        started = time.monotonic()
        try:
            finished = writer.finished_ids.remote(config.run.retry_errors) if config.run.resume else None
            for server, (roles, mode) in self.limited_servers.items():
                self.controllers[server] = RemoteController.remote(server, mode, self.run_config)
                for role in roles:
                    self.agent_specs[role] = dataclasses.replace(
                        self.agent_specs[role], controller=self.controllers[server]
                    )
            agents = {
                role: [RemoteAgent.remote(spec) for _ in range(config.agents[role].replicas)]
                for role, spec in self.agent_specs.items()
            }
            # one collector per CPU at most: more processes than cores only add work (each shard is still read by
            # one collector, and a collector's shards keep run.max_concurrency in flight each)
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            shards = shards_of(config.run.partitions, min(config.run.partitions, cpus))
            collectors = [
                RemoteCollector.remote(
                    index,
                    self.workflow.target,
                    self.workflow_config,
                    self.input_config,
                    self.run_config,
                    writer,
                    finished,
                    its_shards,
                )
                for index, its_shards in enumerate(shards)
            ]
            everyone = [*collectors, *(a for handles in agents.values() for a in handles)]
            ray.get([peer.start.remote(agents, self.policies, collectors) for peer in everyone])
            timeline = TimelineRecorder(
                companion(Path(output), "timeline.jsonl"), self._start_info(), resume=config.run.resume
            )
            started = time.monotonic()  # from here on tasks flow: the run's own time, without actor start-up
            runs = [collector.admit_all.remote() for collector in collectors]
            display = ProgressDisplay(self.workflow.name, config.run.limit, config.run.quiet)
            for cap in self.caps:
                display.note(f"cap: {cap}")
            counts = self._wait(runs, agents, collectors, writer, display, timeline)
        except KeyboardInterrupt:
            raise RunInterrupted(
                "interrupted", hint="the output is valid: run again with --resume to continue"
            ) from None
        except RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, MatrixError):
                raise cause from None
            raise
        finally:
            failing = sys.exc_info()[1]
            if display is not None:
                display.close()
            try:
                metrics = self._close(writer, agents, counts, started)
            except RayTaskError as error:
                cause = getattr(error, "cause", None)
                if failing is None and isinstance(cause, MatrixError):
                    raise cause from None
                if failing is None:
                    raise
                # the run already stops with its first error; closing after it (metrics.json on a full disk) is
                # expected to fail too and must not hide it
                logger.debug("closing the output after the run stopped failed too: %s", cause or error)
            finally:
                everything = [*collectors, *(a for handles in agents.values() for a in handles), writer]
                for handle in [*everything, *self.controllers.values()]:
                    ray.kill(handle)
        return metrics

    def _close(
        self, writer: Any, agents: dict[str, list[Any]], counts: list[PartitionCounts], started: float
    ) -> RunMetrics:
        """Close the writer, which writes the metrics file, adding the engine's own counters."""
        stats = {role: _stats_of_live(handles) for role, handles in agents.items()}
        every = [s for role_stats in stats.values() for s in role_stats]
        most_at_once = {role: max((s.max_in_step for s in each), default=0) for role, each in stats.items()}
        if self.paused_since is not None:
            self.paused_s += time.monotonic() - self.paused_since
        engine = EngineCounters(
            admitted=sum(c.admitted for c in counts),
            skipped_finished=sum(c.skipped_finished for c in counts),
            readmitted=sum(c.readmitted for c in counts),
            peak_in_flight=max((c.peak_in_flight for c in counts), default=0),
            retries=sum(s.retries for s in every),
            rerouted=sum(s.rerouted for s in every),
            offloaded_texts=sum(s.offloaded for s in every),
            most_steps_at_once=most_at_once,
            caps=[
                CapReport(cap.role, cap.setting, cap.limit, cap.asked, cap.reached(most_at_once.get(cap.role, 0)))
                for cap in self.caps
            ],
            backend_outages=self.outages,
            paused_s=round(self.paused_s, 3),
            flow_time_s=round(time.monotonic() - started, 3),
            concurrency=ray.get([controller.report_card.remote() for controller in self.controllers.values()]),
            cost=None if (cost := cost_of(self.prices, stats)) is None else round(cost, 6),
        )
        return ray.get(writer.close.remote(engine))

    def _wait(
        self,
        runs: list[Any],
        agents: dict[str, list[Any]],
        collectors: list[Any],
        writer: Any,
        display: ProgressDisplay,
        timeline: TimelineRecorder,
    ) -> list[PartitionCounts]:
        """Show progress and actors' warnings, record the timeline, and replace dead actors until every collector
        is done; a failed collector (bad input) raises at once, and so does a run that stopped making progress."""
        pending = list(runs)
        last_check = time.monotonic()
        logs = LogRelay(display.note, companion(Path(self.config.output.path).expanduser().absolute(), "log"))
        progress_seen, progress_at = None, time.monotonic()
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                ray.get(ready)
                progress = ray.get(writer.progress.remote())
                by_role = {role: _stats_of_live(handles) for role, handles in agents.items()}
                stats = [s for each in by_role.values() for s in each]
                logs.relay(_logs_of(stats, collectors))
                # tokens as agents use them, not only once their tasks finish: long conversations show progress too
                progress["tokens"] = sum(s.tokens for s in stats)
                progress["cost"] = cost_of(self.prices, by_role)
                self._watch_backends(stats, collectors, display)
                flows = ray.get([c.flow.remote() for c in collectors])
                limits = self._limit_states()
                display.update(progress, sum(in_flight for in_flight, _ in flows), _limits_shown(limits))
                timeline.sample(_sample(progress, by_role, flows, limits))
                # a run paused for a backend outage is not stalled: run.outage_timeout_s watches that
                seen = (progress["done"], sum(s.steps for s in stats))
                if seen != progress_seen or self.paused_since is not None:
                    progress_seen, progress_at = seen, time.monotonic()
                self._watch_stall(time.monotonic() - progress_at, agents, collectors)
                if time.monotonic() - last_check >= LIVENESS_EVERY_S:
                    last_check = time.monotonic()
                    self._replace_dead(agents, collectors)
            by_role = {role: _stats_of_live(handles) for role, handles in agents.items()}
            logs.relay(_logs_of([s for each in by_role.values() for s in each], collectors))
            progress = ray.get(writer.progress.remote())
            progress["cost"] = cost_of(self.prices, by_role)
            flows = ray.get([c.flow.remote() for c in collectors])
            timeline.close(_sample(progress, by_role, flows, self._limit_states()))
        finally:
            logs.close()
        return ray.get(runs)

    def _start_info(self) -> dict[str, Any]:
        """What the timeline's start line says of the run: the workflow, its redacted config, versions, machine."""
        module = self.workflow.cls.__module__.split(".")[0]
        distributions = {"matrix-core", "ray", *packages_distributions().get(module, [])}
        return {
            "workflow": self.workflow.name,
            "output": str(Path(self.config.output.path).expanduser().absolute()),
            "config": OmegaConf.to_container(redact(self.config), enum_to_str=True),
            "profile": self.resolved.profile,
            "versions": {"python": platform.python_version(), **{name: _version(name) for name in distributions}},
            "machine": {
                "host": platform.node(),
                "system": platform.platform(),
                "cpus": os.cpu_count(),
                "ray_cpus": ray.cluster_resources().get("CPU"),
                "ray_gpus": ray.cluster_resources().get("GPU", 0),
            },
        }

    def _limit_states(self) -> dict[str, tuple[int, float | None]]:
        """Each limited server's limit now, and the latency (seconds per output token) it was set from."""
        states = ray.get([controller.state.remote() for controller in self.controllers.values()])
        return dict(zip(self.controllers, states, strict=True))

    def _watch_stall(self, idle_s: float, agents: dict[str, list[Any]], collectors: list[Any]) -> None:
        """Stop the run, saying where its tasks are held, once it went ``run.stall_timeout_s`` without progress."""
        timeout = self.config.run.stall_timeout_s
        if not timeout or idle_s < timeout:
            return
        raise RunStalled(
            f"no task finished and no step completed for {timeout:g}s; {_where_held(agents, collectors)}; "
            "the run stopped",
            hint="the output is valid: run again with --resume once the step that hangs is fixed "
            "(run.stall_timeout_s sets how long a run may make no progress; 0 never stops it)",
        )

    def _watch_backends(self, stats: list[ActorStats], collectors: list[Any], display: ProgressDisplay) -> None:
        """Pause admission while any actor's backend is down, resume it once all answer, and stop the run when
        one stayed down past ``run.outage_timeout_s``."""
        down = sorted((s for s in stats if s.down_since is not None), key=lambda s: s.down_since or 0.0)
        timeout = self.config.run.outage_timeout_s
        if down and self.paused_since is None:
            self.paused_since = time.monotonic()
            self.outages += 1
            ray.get([collector.pause.remote() for collector in collectors])
            display.note(
                f"backend {down[0].backend} does not answer ({down[0].down_error}): admission paused, "
                f"steps wait for it (at most run.outage_timeout_s={timeout:g}s)"
            )
        elif not down and self.paused_since is not None:
            self.paused_s += time.monotonic() - self.paused_since
            self.paused_since = None
            ray.get([collector.resume.remote() for collector in collectors])
            display.note("backend answers again: admission resumed")
        if down and time.time() - (down[0].down_since or 0.0) >= timeout:
            raise BackendOutage(
                f"backend {down[0].backend} answered nothing for {timeout:g}s ({down[0].down_error}); the run stopped",
                hint="the output is valid: run again with --resume once the backend is back",
            )

    def _replace_dead(self, agents: dict[str, list[Any]], collectors: list[Any]) -> None:
        """Replace every dead agent actor in place, tell everyone, and re-admit the tasks it took with it."""
        new = []
        for role, handles in agents.items():
            for index, alive in enumerate(_liveness(handles)):
                if not alive:
                    logger.warning("an actor of role %r died; starting a replacement", role)
                    handles[index] = RemoteAgent.remote(self.agent_specs[role])
                    new.append(handles[index])
        if not new:
            return
        ray.get([handle.start.remote(agents, self.policies, collectors) for handle in new])
        survivors = [a for handles in agents.values() for a in handles if a not in new]
        ray.get([peer.replace_agents.remote(agents) for peer in [*collectors, *survivors]])
        held: set[str] = set()
        for ids in ray.get([peer.holding.remote() for peer in [*collectors, *survivors]]):
            held.update(ids)
        ray.get([collector.readmit.remote(held) for collector in collectors])


def _limits_shown(states: dict[str, tuple[int, float | None]]) -> list[str]:
    """Each limited server's limit, and the latency it was set from, as the display shows them."""
    return [
        f"{server}: limit {limit}" + (f" ({latency * 1000:.1f} ms/token)" if latency is not None else "")
        for server, (limit, latency) in states.items()
    ]


def _sample(
    progress: dict[str, Any],
    by_role: dict[str, list[ActorStats]],
    flows: list[tuple[int, int]],
    limits: dict[str, tuple[int, float | None]],
) -> Sample:
    """The driver's counters at one poll, for the timeline."""
    every = [s for each in by_role.values() for s in each]
    return Sample(
        admitted=sum(admitted for _, admitted in flows),
        finished=progress["status"],
        tokens_in=sum(s.prompt_tokens for s in every),
        tokens_out=sum(s.completion_tokens for s in every),
        retries=sum(s.retries for s in every),
        cost=progress["cost"],
        in_flight=sum(in_flight for in_flight, _ in flows),
        limits={server: limit for server, (limit, _) in limits.items()},
        step_times={role: merged(s.step_times for s in each) for role, each in by_role.items()},
    )


def _version(distribution: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _logs_of(stats: list[ActorStats], collectors: list[Any]) -> list[ActorLogLine]:
    """The warnings the agents sent with their stats, and the collectors' own."""
    lines = [line for s in stats for line in s.log]
    for taken in ray.get([collector.take_logs.remote() for collector in collectors]):
        lines.extend(taken)
    return lines


def _where_held(agents: dict[str, list[Any]], collectors: list[Any]) -> str:
    """Where the run's tasks in flight are: how many each agent actor holds (inbox, step, or a send not yet
    accepted), by role, and how many the collectors have sent that no agent accepted yet."""
    in_flight = sum(in_flight for in_flight, _ in ray.get([c.flow.remote() for c in collectors]))
    roles = []
    for role, handles in agents.items():
        counts = [_count_held(handle) for handle in handles]
        if any(counts):
            held = sum(count for count in counts if isinstance(count, int))
            each = ", ".join(f"{role}#{index}: {count}" for index, count in enumerate(counts) if count)
            roles.append(f"role {role!r} holds {held} ({each})")
    unaccepted = sum(count for count in map(_count_held, collectors) if isinstance(count, int))
    if unaccepted:
        roles.append(f"{unaccepted} sent by the collectors and not yet accepted")
    return f"{in_flight} task(s) in flight: " + ("; ".join(roles) or "no actor holds one")


def _count_held(handle: Any) -> int | str:
    """How many tasks the actor holds, or ``no answer`` from an actor too busy (or too stuck) to say."""
    try:
        return len(ray.get(handle.holding.remote(), timeout=10))
    except (RayActorError, GetTimeoutError):
        return "no answer"


def _stats_of_live(handles: list[Any]) -> list[ActorStats]:
    """``get_stats()`` of every agent actor still alive (a dead one's counters died with it)."""
    stats = []
    for ref in [handle.get_stats.remote() for handle in handles]:
        try:
            stats.append(ray.get(ref, timeout=30))
        except (RayActorError, GetTimeoutError):
            continue
    return stats


def _liveness(handles: list[Any]) -> list[bool]:
    """For each actor, False once it is dead; pinged all at once, and a busy one that does not answer in time
    counts as alive."""
    flags = []
    for ref in [handle.ping.remote() for handle in handles]:
        try:
            flags.append(ray.get(ref, timeout=30))
        except RayActorError:
            flags.append(False)
        except GetTimeoutError:
            flags.append(True)
    return flags
