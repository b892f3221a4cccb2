"""What the cluster tests share: the ``matrix`` CLI in a subprocess, the toy workflow as an installed plugin, a
way to find every process of a cluster, and what they listen on."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil

from matrix_core.cluster.node import MARKER

TESTS = Path(__file__).parent


def toy_site(root: Path) -> Path:
    """A directory that, on PYTHONPATH, makes the toy workflow an installed plugin (an entry point, as pip would)."""
    site = root / "site"
    info = site / "toy_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[matrix]\ntoy = toy_workflow\n")
    return site


def cli_env(home: Path, *python_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``matrix`` subprocess: its own MATRIX_HOME, no Ray address or token from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "MATRIX_"))}
    env["MATRIX_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(str(path) for path in python_path)
    return {**env, **extra}


def matrix(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``matrix ARGS`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "matrix_core", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def write_rows(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"t{i}"}) + "\n" for i in range(count)))
    return path


def processes_of(cluster_dir: Path) -> list[psutil.Process]:
    """Every live process started for the cluster (each carries its directory in its environment)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == str(cluster_dir) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def listeners(root: psutil.Process) -> set[tuple[str, int, str]]:
    """``(address, port, process name)`` of every listening TCP socket of ``root`` and its descendants now."""
    found: set[tuple[str, int, str]] = set()
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((connection.laddr.ip, connection.laddr.port, process.name()))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def is_loopback(address: str) -> bool:
    """Whether a listening address is this machine's own (``::ffff:127.0.0.1`` too, as Ray's gRPC servers bind)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def fake_prometheus(root: Path) -> Path:
    """A directory whose ``prometheus`` records its command line (into ``$FAKE_PROMETHEUS_ARGV``, one argument a
    line) and then waits to be stopped, listening nowhere: for tests where the real one is not installed."""
    bin_dir = root / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "prometheus"
    script.write_text('#!/bin/sh\nprintf \'%s\\n\' "$@" > "$FAKE_PROMETHEUS_ARGV"\nexec sleep 3600\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir
