"""The process that runs one Ray node of a Matrix cluster, on this machine (``--local``) or inside a SLURM job:
``ray start --block`` with the cluster's token and private ports, plus on the head its ``head.json``, the list of
every node's metrics exporter and, when asked, Prometheus and Ray's dashboard. It lives as long as its node:
stopping it (SIGTERM, or ``scancel``) stops the node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from matrix_core.backends.server_replica import free_port
from matrix_core.cluster import prometheus
from matrix_core.cluster.connect import LOOPBACK_ONLY
from matrix_core.cluster.state import ClusterState
from matrix_core.private_files import private_directory, write_private

MARKER = "MATRIX_CLUSTER_DIR"
"""Set in the environment of every process of a cluster's nodes (Ray's workers inherit it), so that tests and
users can find them all."""
ATTEMPTS = 3
"""Tries of ``ray start`` per node: on a busy machine Ray's own 30-second start-up limit is sometimes too short."""
STARTED = "Ray runtime started"
"""What ``ray start`` prints once its node is up."""


def private_temp_dir() -> Path:
    """A new directory for the head's temporary files: mode 700 under a random name, so nobody can have made it (or
    a symlink there) before, or look inside. Ray's own go in its ``ray/``, which Ray makes world-writable (so that
    several users can share one Ray temp dir): the private parent keeps everyone else out. On the node's local disk
    (``$TMPDIR``, else /tmp) and short, because Ray's Unix sockets live under it (at most 107 bytes a path); not under
    MATRIX_HOME, which is usually a shared filesystem."""
    return Path(tempfile.mkdtemp(prefix="matrix-"))


def node_ip() -> str:
    """This node's address as Ray picks it (the interface of the default route)."""
    from ray.util import get_node_ip_address

    return get_node_ip_address()


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
    """What every process of a node runs with: the cluster's token, and Ray's cluster mode (other nodes must reach
    this one; matrix_core's import set loopback-only for private runs)."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(cluster_directory / "auth_token"),
        LOOPBACK_ONLY: "1",
        MARKER: str(cluster_directory),
    }


class _Node:
    """``ray start --block`` as a child process (retried when it fails to come up: on a busy machine Ray's own
    30-second start-up limit is sometimes too short), stopped when this process is asked to stop."""

    def __init__(self, cluster_directory: Path) -> None:
        os.environ.update(_environment(cluster_directory))  # before ray is imported here (node_ip, the targets)
        self.env = dict(os.environ)
        self.children: list[subprocess.Popen] = []
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def start_ray(self, command: list[str], ready: Callable[[], bool], before_retry: Callable[[], None]) -> None:
        """Run ``command`` until ``ready()``; a run that exits first is retried up to ``ATTEMPTS`` times."""
        for attempt in range(1, ATTEMPTS + 1):
            if self.stopping:  # asked to stop (SIGTERM) before Ray started: start nothing that would outlive us
                raise RuntimeError("stopped before Ray started")
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


def run_head(cluster_dir: str) -> None:
    """Run the head node until stopped; writes ``head.json`` once Ray accepts connections. What runs beside Ray
    (the dashboard, Prometheus) is read from the cluster's ``cluster.json``."""
    directory = Path(cluster_dir)
    state = ClusterState(**json.loads((directory / "cluster.json").read_text()))
    node = _Node(directory)
    temp_dir = private_temp_dir()
    ray_dir = temp_dir / "ray"
    ports = {name: free_port() for name in ("gcs", "client", "dashboard")}
    dashboard, dashboard_url = ["--include-dashboard", "false"], None
    if state.dashboard:  # its HTTP API (jobs: code execution) asks for the cluster's token; this node's address only
        host = node_ip()
        dashboard = ["--include-dashboard", "true", "--dashboard-host", host]
        dashboard += ["--dashboard-port", str(ports["dashboard"])]
        dashboard_url = f"http://{_host_port(host, ports['dashboard'])}"
    command = _ray_start(
        [
            "--head",
            "--port",
            str(ports["gcs"]),
            "--ray-client-server-port",
            str(ports["client"]),
            *dashboard,
            "--temp-dir",
            str(ray_dir),
        ]
    )
    address_file = ray_dir / "ray_current_cluster"
    code = None
    try:
        node.start_ray(
            command,
            ready=lambda: node.started.is_set() and address_file.exists() and bool(address_file.read_text().strip()),
            before_retry=lambda: address_file.unlink(missing_ok=True),  # a failed try's address must not be taken
        )
        try:
            _serve_head(node, command, state, directory, temp_dir, ports["client"], dashboard_url)
        except BaseException:  # e.g. no prometheus on this node: Ray must not outlive the job's failure
            node.stop()
            node.wait()
            raise
        code = node.wait()
    finally:
        if code == 0 or node.stopping:  # kept after a failure: Ray's logs in it say why
            shutil.rmtree(temp_dir, ignore_errors=True)
    if code:
        raise RuntimeError(f"the Ray head exited with status {code}; see this job's log and Ray's in {temp_dir}")


def _serve_head(
    node: _Node,
    command: list[str],
    state: ClusterState,
    directory: Path,
    temp_dir: Path,
    client_port: int,
    dashboard_url: str | None,
) -> None:
    """Write the metrics targets and ``head.json`` (and start Prometheus), then keep the targets fresh until Ray
    exits."""
    address = (temp_dir / "ray" / "ray_current_cluster").read_text().strip()
    ip = address.rsplit(":", 1)[0]
    metrics_port = command[command.index("--metrics-export-port") + 1]
    targets = _metrics_targets(address, temp_dir / "ray")
    _write_targets(targets, directory)
    info = {
        "address": address,
        "client_address": f"ray://{ip}:{client_port}",
        "dashboard_url": dashboard_url,
        "metrics_endpoint": f"{ip}:{metrics_port}",
        "temp_dir": str(temp_dir),
        "prometheus_url": None,
    }
    if state.prometheus:
        port = free_port()
        config = prometheus.write_config(directory, directory / "metrics_targets.json")
        listen = _host_port(state.metrics_host, port)
        node.spawn(prometheus.command(config, temp_dir / "prometheus", listen), dict(os.environ))
        reach = ip if state.metrics_host in prometheus.EVERY_INTERFACE else state.metrics_host
        info["prometheus_url"] = f"http://{_host_port(reach, port)}"
    write_private(directory / "head.json", json.dumps(info, indent=2) + "\n")
    while True:
        time.sleep(2)
        if node.ray.poll() is not None or node.stopping:  # asking a GCS that is gone would wait 60 s
            return
        _write_targets(targets, directory)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _metrics_targets(address: str, temp_dir: Path) -> Callable[[], str]:
    """Every live node's metrics exporter, in Prometheus' file_sd format, asked of the GCS at ``address``. Ray's
    dashboard writes this list when it runs; without it, this is Ray's own writer, used in this process (it lives
    in ``ray._private``: no public API lists the exporters without a driver)."""
    from ray._private.metrics_agent import PrometheusServiceDiscoveryWriter

    return PrometheusServiceDiscoveryWriter(address, str(temp_dir)).get_file_discovery_content


def _write_targets(targets: Callable[[], str], directory: Path) -> None:
    """Write ``metrics_targets.json`` into the cluster directory, where Prometheus and ``matrix metrics`` (from any
    machine) read it."""
    try:
        content = targets()
    except Exception as error:  # the GCS busy or going away: Ray's dashboard logs this and tries again too
        print(f"metrics targets not refreshed: {error}", file=sys.stderr, flush=True)
        return
    write_private(directory / "metrics_targets.json", content)


def run_worker(cluster_dir: str, address: str) -> None:
    """Run a worker node joined to the head at ``address`` until stopped."""
    directory = Path(cluster_dir)
    node = _Node(directory)
    # Ray puts a worker's files at the head's temp dir path, on the worker's own disk: private there too (ours,
    # mode 700), refused if someone made it first. Left in place at the end: another worker of ours may share it.
    private_directory(Path(json.loads((directory / "head.json").read_text())["temp_dir"]))
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
        run_head(cluster_dir)
    else:
        run_worker(cluster_dir, rest[0])


if __name__ == "__main__":
    main()
