"""The process that runs one Ray node of a Matrix cluster, on this machine (``--local``) or inside a SLURM job:
``ray start --block`` with the cluster's token and private ports, plus on the head its ``head.json`` and, when
asked, Prometheus. It lives as long as its node: stopping it (SIGTERM, or ``scancel``) stops the node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from matrix_core.cluster import prometheus

MARKER = "MATRIX_CLUSTER_DIR"
"""Set in the environment of every process of a cluster's nodes (Ray's workers inherit it), so that tests and
users can find them all."""
ATTEMPTS = 3
"""Tries of ``ray start`` per node: on a busy machine Ray's own 30-second start-up limit is sometimes too short."""
STARTED = "Ray runtime started"
"""What ``ray start`` prints once its node is up."""


def free_port(host: str = "") -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ray_temp_dir(cluster_directory: Path) -> Path:
    """The head's Ray temp dir: node-local and short, because Ray's socket paths live under it."""
    return Path(tempfile.gettempdir()) / f"matrix-{zlib.crc32(str(cluster_directory).encode()):08x}"


def _cpus_from_slurm() -> list[str]:
    """Advertise to Ray only the CPUs SLURM gave this job (Ray would count the whole machine)."""
    cpus = os.environ.get("SLURM_CPUS_ON_NODE")
    return ["--num-cpus", cpus] if cpus else []


def _ray_start(extra: list[str]) -> list[str]:
    """``ray start --block`` with every per-node port chosen free, so several nodes can share a machine."""
    ray = Path(sys.executable).with_name("ray")
    command = [str(ray) if ray.exists() else "ray", "start", "--block", "--disable-usage-stats"]
    for option in (
        "--metrics-export-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
    ):
        command += [option, str(free_port())]
    return command + _cpus_from_slurm() + extra


def _environment(cluster_directory: Path) -> dict[str, str]:
    token_path = cluster_directory / "auth_token"
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        MARKER: str(cluster_directory),
    }


class _Node:
    """``ray start --block`` as a child process (retried when it fails to come up: on a busy machine Ray's own
    30-second start-up limit is sometimes too short), stopped when this process is asked to stop."""

    def __init__(self, cluster_directory: Path) -> None:
        self.env = _environment(cluster_directory)
        self.children: list[subprocess.Popen] = []
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def start_ray(self, command: list[str], ready: Callable[[], bool], before_retry: Callable[[], None]) -> None:
        """Run ``command`` until ``ready()``; a run that exits first is retried up to ``ATTEMPTS`` times."""
        for attempt in range(1, ATTEMPTS + 1):
            self.ray = self.spawn_ray(command)
            while not ready():
                if self.ray.poll() is not None:
                    break
                time.sleep(0.2)
            else:
                return
            if self.stopping or attempt == ATTEMPTS:
                raise RuntimeError(f"ray start failed (exit status {self.ray.returncode}); see this job's log")
            print(f"ray start failed (exit status {self.ray.returncode}); retrying", file=sys.stderr, flush=True)
            self.children.remove(self.ray)
            before_retry()

    def spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        child = subprocess.Popen(command, env=env)
        self.children.append(child)
        return child

    def spawn_ray(self, command: list[str]) -> subprocess.Popen:
        """Start ``ray start``, echoing its output, and note when it says the node is up (``self.started``)."""
        self.started = threading.Event()
        child = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.children.append(child)
        threading.Thread(target=self._echo, args=(child, self.started), daemon=True).start()
        return child

    @staticmethod
    def _echo(child: subprocess.Popen, started: threading.Event) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if STARTED in line:
                started.set()

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.stop()

    def stop(self) -> None:
        """Ask every child to stop (SIGTERM); a no-op for those already gone."""
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Wait for Ray to exit, then stop the other children."""
        code = self.ray.wait()
        self.stop()
        for child in self.children:
            child.wait()
        return 0 if self.stopping else code


def run_head(cluster_dir: str, with_prometheus: bool = False) -> None:
    """Run the head node until stopped; writes ``head.json`` once Ray accepts connections."""
    directory = Path(cluster_dir)
    temp_dir = ray_temp_dir(directory)
    shutil.rmtree(temp_dir, ignore_errors=True)  # a previous head's address file must not be taken for ours
    ports = {name: free_port() for name in ("gcs", "client", "dashboard")}
    command = _ray_start(
        [
            "--head",
            "--port",
            str(ports["gcs"]),
            "--ray-client-server-port",
            str(ports["client"]),
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "0.0.0.0",  # the dashboard asks for the cluster's token too
            "--dashboard-port",
            str(ports["dashboard"]),
            "--temp-dir",
            str(temp_dir),
        ]
    )
    node = _Node(directory)
    address_file = temp_dir / "ray_current_cluster"
    node.start_ray(
        command,
        ready=lambda: node.started.is_set() and address_file.exists() and bool(address_file.read_text().strip()),
        before_retry=lambda: shutil.rmtree(temp_dir, ignore_errors=True),
    )
    try:
        _serve_head(node, command, directory, temp_dir, ports, with_prometheus)
    except BaseException:  # e.g. no prometheus on this node: Ray must not outlive the job's failure
        node.stop()
        node.wait()
        raise
    code = node.wait()
    if code:
        raise RuntimeError(f"the Ray head exited with status {code}; see this job's log")


def _serve_head(
    node: _Node, command: list[str], directory: Path, temp_dir: Path, ports: dict[str, int], with_prometheus: bool
) -> None:
    """Write ``head.json`` (and start Prometheus), then keep the metrics targets fresh until Ray exits."""
    address_file = temp_dir / "ray_current_cluster"
    address = address_file.read_text().strip()
    ip = address.rsplit(":", 1)[0]
    metrics_port = command[command.index("--metrics-export-port") + 1]
    info = {
        "address": address,
        "client_address": f"ray://{ip}:{ports['client']}",
        "dashboard_url": f"http://{ip}:{ports['dashboard']}",
        "metrics_endpoint": f"{ip}:{metrics_port}",
        "temp_dir": str(temp_dir),
        "prometheus_url": None,
    }
    if with_prometheus:
        port = free_port()
        session = (temp_dir / "session_latest").resolve()
        config = prometheus.write_config(directory, session / "prom_metrics_service_discovery.json")
        node.spawn(prometheus.command(config, temp_dir / "prometheus", f"{ip}:{port}"), dict(os.environ))
        info["prometheus_url"] = f"http://{ip}:{port}"
    temporary = directory / "head.json.tmp"
    temporary.write_text(json.dumps(info, indent=2) + "\n")
    temporary.replace(directory / "head.json")
    _keep_targets(node, temp_dir, directory)


def _keep_targets(node: _Node, temp_dir: Path, directory: Path) -> None:
    """Until Ray exits, copy Ray's list of every node's metrics endpoint (on the head's local disk) into the
    cluster directory, where ``matrix metrics`` reads it from any machine."""
    source = temp_dir / "session_latest" / "prom_metrics_service_discovery.json"
    while node.ray.poll() is None:
        if source.exists():
            try:
                shutil.copyfile(source, directory / "metrics_targets.json.tmp")
                (directory / "metrics_targets.json.tmp").replace(directory / "metrics_targets.json")
            except OSError:
                pass  # Ray replaces the file while we copy it: the next round gets it
        time.sleep(2)


def run_worker(cluster_dir: str, address: str) -> None:
    """Run a worker node joined to the head at ``address`` until stopped."""
    node = _Node(Path(cluster_dir))
    node.start_ray(
        _ray_start(["--address", address]),
        ready=lambda: node.started.is_set(),
        before_retry=lambda: None,
    )
    code = node.wait()
    if code:
        raise RuntimeError(f"the Ray worker exited with status {code}; see this job's log")


def main() -> None:
    """``python -m matrix_core.cluster.node head|worker CLUSTER_DIR [ADDRESS]``: a node on this machine."""
    role, cluster_dir, *rest = sys.argv[1:]
    if role == "head":
        run_head(cluster_dir, with_prometheus=rest == ["prometheus"])
    else:
        run_worker(cluster_dir, rest[0])


if __name__ == "__main__":
    main()
