"""Ray nodes as processes on this machine (``matrix cluster start --local``): each node is one detached
``python -m matrix_core.cluster.node`` process in its own session, known by its pid and stopped by it alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from matrix_core.cluster.state import ClusterState

STOP_TIMEOUT_S = 60.0


def spawn_node(state: ClusterState, role: str, address: str | None = None) -> str:
    """Start a head (``address`` None) or a worker joining ``address``; returns its pid as the node's job id."""
    logs = state.directory / "logs"
    logs.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "matrix_core.cluster.node", role, str(state.directory)]
    if role == "worker":
        assert address is not None
        command.append(address)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # "0" (loopback only) refuses worker nodes
    starting = logs / f"{role}-starting.log"
    with open(starting, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    starting.replace(logs / f"{role}-{process.pid}.log")  # the node keeps writing to the renamed file
    return str(process.pid)


def log_path(state: ClusterState, job: str) -> Path:
    """The log of the node whose pid is ``job``."""
    return next((state.directory / "logs").glob(f"*-{job}.log"), state.directory / "logs")


def _process(state: ClusterState, job: str) -> psutil.Process | None:
    """The node process ``job`` if it is still ours (a reused pid belongs to someone else)."""
    try:
        process = psutil.Process(int(job))
        return process if str(state.directory) in process.cmdline() else None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_alive(state: ClusterState, job: str) -> bool:
    """Whether the node process ``job`` still runs."""
    process = _process(state, job)
    return process is not None and process.status() != psutil.STATUS_ZOMBIE


def stop(state: ClusterState, jobs: list[str]) -> None:
    """Stop the node processes ``jobs`` (SIGTERM, then SIGKILL to their own process group after a timeout)."""
    processes = [p for p in (_process(state, job) for job in jobs) if p is not None]
    for process in processes:
        process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
    for process in alive:
        os.killpg(process.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)
