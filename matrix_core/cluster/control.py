"""Starting, growing, inspecting and stopping a cluster, whichever kind it is (``local`` or ``slurm``)."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from matrix_core.cluster import local, prometheus, slurm
from matrix_core.cluster.connect import RayTarget, require_token_auth
from matrix_core.cluster.state import LOOPBACK, ClusterError, ClusterState, HeadInfo, load, new_cluster
from matrix_core.errors import UsageError

logger = logging.getLogger(__name__)

POLL_S = 0.5


def start_cluster(
    name: str,
    *,
    local_nodes: bool,
    slurm_options: dict[str, Any],
    workers: int,
    with_prometheus: bool,
    timeout_s: float,
    with_dashboard: bool = False,
    metrics_host: str = LOOPBACK,
) -> ClusterState:
    """Start the head, wait until it is reachable, then start ``workers`` workers and wait until they joined.
    On any failure the jobs already started are stopped, and the error names the failing job's log."""
    if local_nodes and slurm_options:
        raise ClusterError("--local and --slurm exclude each other")
    if metrics_host != LOOPBACK and not with_prometheus:
        raise UsageError("--metrics-host says where Prometheus listens: it needs --prometheus")
    require_token_auth("a cluster")
    if with_prometheus and local_nodes and prometheus.executable() is None:
        raise ClusterError("--prometheus: no `prometheus` on PATH", hint="Debian: apt-get install prometheus")
    state = new_cluster(
        name,
        "local" if local_nodes else "slurm",
        slurm_options,
        with_prometheus,
        dashboard=with_dashboard,
        metrics_host=metrics_host,
    )
    try:
        state.head_job = _launcher(state).spawn_head(state)
        state.save()
        head = _wait_for_head(state, timeout_s)
        if workers:
            _grow(state, head, workers, timeout_s)
    except BaseException:
        stop_cluster(name)
        raise
    return state


def add_workers(name: str, count: int, timeout_s: float) -> list[str]:
    """Start ``count`` more workers on a running cluster and wait until they joined; returns their job ids."""
    state = _running(name)
    head = state.head
    if head is None:
        raise ClusterError(f"cluster {name!r} has no head address yet")
    return _grow(state, head, count, timeout_s)


def status(name: str) -> dict[str, Any]:
    """The cluster's state, each job's state, and (when its head answers) Ray's nodes and resources."""
    state = load(name)
    report = state.to_json()
    jobs = [job for job in [state.head_job, *state.worker_jobs] if job]
    report["jobs"] = _launcher(state).job_states(state, jobs) if not state.stopped else dict.fromkeys(jobs, "STOPPED")
    report["ray"] = None
    head = state.head
    if head and not state.stopped and _reachable(head.address):
        report["ray"] = _ray_summary(state)
    return report


def stop_cluster(name: str) -> list[str]:
    """Stop every job (or node process) this cluster started, and nothing else; returns their ids."""
    state = load(name)
    jobs = [job for job in [state.head_job, *state.worker_jobs] if job]
    if jobs:
        _launcher(state).stop(state, jobs)
    state.stopped = datetime.now(UTC).isoformat(timespec="seconds")
    state.save()
    return jobs


def _running(name: str) -> ClusterState:
    state = load(name)
    if state.stopped:
        raise ClusterError(f"cluster {name!r} was stopped at {state.stopped}", hint=f"matrix cluster start {name}")
    return state


def _grow(state: ClusterState, head: HeadInfo, count: int, timeout_s: float) -> list[str]:
    expected = _live_nodes(state) + count  # not the jobs on record: a worker that died is no node any more
    launcher = _launcher(state)
    jobs = launcher.spawn_workers(state, head.address, count)
    state.worker_jobs += jobs
    state.save()
    try:
        _wait_for_nodes(state, jobs, expected, timeout_s)
    except BaseException:
        launcher.stop(state, jobs)
        state.worker_jobs = [job for job in state.worker_jobs if job not in jobs]
        state.save()
        raise
    return jobs


def _wait_for_head(state: ClusterState, timeout_s: float) -> HeadInfo:
    """Wait until the head wrote its address and accepts connections; a job that ends first, or a timeout, is a
    one-line error with the job's log."""
    assert state.head_job is not None

    def ready() -> HeadInfo | None:
        head = state.head
        return head if head is not None and _reachable(head.address) else None

    return _wait(state, [state.head_job], ready, timeout_s, "the head")


def _wait_for_nodes(state: ClusterState, jobs: list[str], expected: int, timeout_s: float) -> None:
    """Wait until Ray counts ``expected`` live nodes."""
    with RayTarget.for_cluster(state).connected():
        _wait(state, jobs, lambda: _count_live() >= expected or None, timeout_s, "the workers")


def _live_nodes(state: ClusterState) -> int:
    """How many nodes Ray counts alive in the cluster now."""
    with RayTarget.for_cluster(state).connected():
        return _count_live()


def _count_live() -> int:
    import ray

    return sum(1 for entry in ray.nodes() if entry["Alive"])


def _wait(state: ClusterState, jobs: list[str], ready: Callable[[], Any], timeout_s: float, what: str) -> Any:
    launcher = _launcher(state)
    deadline = time.monotonic() + timeout_s
    while True:
        result = ready()
        if result:
            return result
        for job in jobs:
            reason = launcher.failure(state, job)
            if reason:
                raise ClusterError(
                    f"{what} of cluster {state.name!r} failed to start (job {job}: {reason}); "
                    f"log: {launcher.log_path(state, job)}"
                )
        if time.monotonic() > deadline:
            states = launcher.job_states(state, jobs)
            raise ClusterError(
                f"{what} of cluster {state.name!r} did not become reachable within {timeout_s:.0f}s "
                f"(job {jobs[0]}: {states.get(jobs[0], 'ended')}); log: {launcher.log_path(state, jobs[0])}",
                hint="raise --timeout if jobs wait in the queue",
            )
        time.sleep(POLL_S)


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _ray_summary(state: ClusterState) -> dict[str, Any]:
    with RayTarget.for_cluster(state).connected():
        import ray

        nodes = ray.nodes()
        total, available = ray.cluster_resources(), ray.available_resources()
    return {
        "nodes_alive": sum(1 for entry in nodes if entry["Alive"]),
        "nodes_dead": sum(1 for entry in nodes if not entry["Alive"]),
        "cpus": total.get("CPU", 0.0),
        "cpus_free": available.get("CPU", 0.0),
        "gpus": total.get("GPU", 0.0),
        "gpus_free": available.get("GPU", 0.0),
    }


@dataclasses.dataclass(frozen=True)
class _NodeLauncher:
    """How one kind of cluster starts, watches and stops its nodes."""

    spawn_head: Callable[[ClusterState], str]
    spawn_workers: Callable[[ClusterState, str, int], list[str]]
    failure: Callable[[ClusterState, str], str | None]
    log_path: Callable[[ClusterState, str], Any]
    job_states: Callable[[ClusterState, list[str]], dict[str, str]]
    stop: Callable[[ClusterState, list[str]], None]


def _local_failure(state: ClusterState, job: str) -> str | None:
    return None if local.is_alive(state, job) else "its process exited"


_LOCAL = _NodeLauncher(
    spawn_head=lambda state: local.spawn_node(state, "head"),
    spawn_workers=lambda state, address, count: [local.spawn_node(state, "worker", address) for _ in range(count)],
    failure=_local_failure,
    log_path=local.log_path,
    job_states=lambda state, jobs: {job: "RUNNING" if local.is_alive(state, job) else "EXITED" for job in jobs},
    stop=local.stop,
)
_SLURM = _NodeLauncher(
    spawn_head=slurm.submit_head,
    spawn_workers=slurm.submit_workers,
    failure=slurm.failure,
    log_path=slurm.log_path,
    job_states=lambda state, jobs: {**dict.fromkeys(jobs, "ENDED"), **slurm.states(jobs)},
    stop=lambda state, jobs: _cancel_and_wait(state, jobs),
)


def _cancel_and_wait(state: ClusterState, jobs: list[str], timeout_s: float = 120.0) -> None:
    slurm.cancel(state, jobs)
    deadline = time.monotonic() + timeout_s
    while slurm.states(jobs):
        if time.monotonic() > deadline:
            raise ClusterError(
                f"jobs {', '.join(slurm.states(jobs))} still in the queue {timeout_s:.0f}s after scancel"
            )
        time.sleep(POLL_S)


def _launcher(state: ClusterState) -> _NodeLauncher:
    return _LOCAL if state.kind == "local" else _SLURM
