"""Ray nodes as SLURM jobs, submitted with submitit: one job per node, the head first, workers given its address.
submitit keeps each job's launch script and logs in ``<cluster dir>/slurm/``."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from matrix_core.cluster import node
from matrix_core.cluster.state import ClusterError, ClusterState
from matrix_core.errors import UsageError, first_line

DEFAULT_TIME_MIN = 240
"""A cluster's jobs run 4 hours unless ``--slurm time=MINUTES`` says otherwise (submitit's own default is 5)."""
ENDED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "DEADLINE"}


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs into submitit's SlurmExecutor parameters (``cpus-per-task`` or ``cpus_per_task``);
    integers stay integers. Unknown keys are rejected by submitit itself when the jobs are submitted."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--slurm {pair!r}: expected KEY=VALUE, e.g. partition=gpu or gpus_per_node=8")
        options[key.replace("-", "_")] = int(value) if value.isdigit() else value
    return options


def _executor(state: ClusterState, role: str) -> Any:
    if shutil.which("sbatch") is None:
        raise ClusterError(
            "no `sbatch` on PATH: SLURM is not available here", hint="use --local, or run on a login node"
        )
    import submitit

    executor = submitit.SlurmExecutor(folder=state.directory / "slurm", max_num_timeout=0)
    parameters = {"time": DEFAULT_TIME_MIN, "nodes": 1, "ntasks_per_node": 1, **state.slurm}
    try:
        executor.update_parameters(job_name=f"matrix-{state.name}-{role}", **parameters)
    except ValueError as error:  # submitit names the unknown parameter and lists the valid ones
        raise UsageError(f"--slurm: {first_line(error)}") from None
    return executor


def submit_head(state: ClusterState) -> str:
    """Submit the head's job; returns its id."""
    return _submit(_executor(state, "head"), "head", node.run_head, str(state.directory))


def submit_workers(state: ClusterState, address: str, count: int) -> list[str]:
    """Submit ``count`` worker jobs joining the head at ``address``; returns their ids."""
    executor = _executor(state, "worker")
    return [_submit(executor, "worker", node.run_worker, str(state.directory), address) for _ in range(count)]


def _submit(executor: Any, role: str, function: Any, *args: Any) -> str:
    from submitit.core.utils import FailedJobError

    echoed = io.StringIO()  # submitit echoes sbatch's stderr: keep it for the one-line error instead
    try:
        with contextlib.redirect_stderr(echoed):
            return str(executor.submit(function, *args).job_id)
    except FailedJobError as error:  # sbatch refused it: its own message says why (bad partition, account, ...)
        text = f"{echoed.getvalue()}\n{error}"
        lines = [line.strip() for line in text.splitlines() if "error:" in line.lower()]
        raise ClusterError(f"sbatch refused the {role} job: {lines[0] if lines else error}") from None


def _job(state: ClusterState, job: str) -> Any:
    import submitit

    return submitit.SlurmJob(folder=state.directory / "slurm", job_id=job)


def log_path(state: ClusterState, job: str) -> Path:
    """The job's standard error, where its traceback lands."""
    return _job(state, job).paths.stderr


def states(jobs: list[str]) -> dict[str, str]:
    """SLURM's state of each job still known to ``squeue`` (``PENDING``, ``RUNNING``, ...); ended jobs are absent."""
    if not jobs:
        return {}
    result = subprocess.run(
        ["squeue", "-h", "-o", "%i %T", "-j", ",".join(jobs)], capture_output=True, text=True, check=False
    )
    found = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    return {job: found[job] for job in jobs if job in found}


def failure(state: ClusterState, job: str) -> str | None:
    """Why job ``job`` ended, if it has: its exception's last line, or its SLURM state."""
    handle = _job(state, job)
    if handle.paths.result_pickle.exists():
        error = handle.exception()
        if error is None:
            return "it returned"
        # submitit wraps the job's traceback: its last "SomeError: message" line says what went wrong
        raised = [line.strip() for line in str(error).splitlines() if re.match(r"^\s*\w+(Error|Exception): ", line)]
        return raised[-1] if raised else first_line(error)
    current = states([job]).get(job)
    if current is None:
        return "it ended"
    return current if current.split()[0] in ENDED else None


def cancel(state: ClusterState, jobs: list[str]) -> None:
    """``scancel`` the jobs (only these: each cluster knows its own job ids)."""
    for job in jobs:
        _job(state, job).cancel(check=False)
