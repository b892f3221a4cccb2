"""A real one-node SLURM for the cluster tests: munged, slurmctld and slurmd started by hand, in the foreground, on
loopback, with their state in a temporary directory; stopped by pid. Needs root and Debian's ``slurm-wlm``."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "runuser")
NODE = "matrixnode"
NODE_CPUS = 8  # more than the machine has (config_overrides): a head and two workers of 1 CPU each fit


def unavailable() -> str | None:
    """Why a one-node SLURM cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "a one-node SLURM needs root (to run munged and slurmd)"
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm"
    if importlib.util.find_spec("submitit") is None:
        return "submitit is not installed (pip install 'matrix-core[slurm]')"
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (Debian's munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(root: Path, munge_socket: Path) -> str:
    return "\n".join(
        [
            "ClusterName=matrixtest",
            f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log",
            f"SlurmdLogFile={root}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "MpiDefault=none",
            "KillWait=5",
            f"NodeName={NODE} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} "
            "RealMemory=16000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@contextmanager
def one_node_slurm() -> Iterator[dict[str, str]]:
    """Start a one-node SLURM; yields the environment variables that point the SLURM commands at it
    (``SLURM_CONF``). Raises RuntimeError, with the daemons' logs, when it does not come up."""
    root = Path(tempfile.mkdtemp(prefix="mx-slurm-"))
    os.chmod(root, 0o755)
    munge_dir = root / "munge"
    munge_dir.mkdir()
    shutil.chown(munge_dir, "munge", "munge")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    munge_socket = munge_dir / "munge.socket"
    (root / "slurm.conf").write_text(_config(root, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    processes: list[subprocess.Popen] = []
    try:
        munge_args = [
            f"--socket={munge_socket}",
            f"--log-file={munge_dir}/munged.log",
            f"--pid-file={munge_dir}/munged.pid",
            f"--seed-file={munge_dir}/munged.seed",
        ]
        log = open(root / "daemons.log", "ab")  # noqa: SIM115 - the daemons write to it until they stop
        munged = ["runuser", "-u", "munge", "--", "munged", "-F", "-f", *munge_args]
        processes.append(subprocess.Popen(munged, stdout=log, stderr=log))
        _wait_for(lambda: munge_socket.exists(), "munged", root)
        for command in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", NODE]):
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        _wait_for(lambda: _node_idle(env), "the SLURM node", root)
        yield {"SLURM_CONF": str(root / "slurm.conf")}
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _node_idle(env: dict[str, str]) -> bool:
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == "idle"


def _wait_for(condition, what: str, root: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in root.rglob("*.log"))
            raise RuntimeError(f"{what} did not come up within {timeout_s:.0f}s\n{logs}")
        time.sleep(0.2)
