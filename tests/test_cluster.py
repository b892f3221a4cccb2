"""Clusters without SLURM: a real head (and workers) started by `matrix cluster start --local`, runs on it with
--cluster and --address, its metrics endpoint and Prometheus, growing it, stopping it; what it listens on (the
dashboard only when asked, behind the token); its private temporary directory; and the one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import psutil
import pytest
from cluster_helpers import TESTS, cli_env, fake_prometheus, listeners, matrix, processes_of, toy_site, write_rows

from matrix_core.cluster import prometheus
from matrix_core.cluster.metrics import Source, read

ROWS = 12
RUNS: list[str] = []
"""The toy runs made on the module's cluster so far (its counters add up over all of them)."""


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """A local cluster (head + Prometheus, a stand-in recording its command line where Prometheus is not installed)
    whose nodes do NOT have the toy workflow on their path: runs ship it with --runtime-env. Yields (environment
    for `matrix`, cluster directory, work directory)."""
    root = tmp_path_factory.mktemp("cluster")
    home = root / "home"
    env = cli_env(home, toy_site(root), TESTS)
    node_env = cli_env(home)  # the nodes: matrix installed, the toy workflow not
    if not prometheus.executable():
        node_env["PATH"] = f"{fake_prometheus(root)}{os.pathsep}{node_env['PATH']}"
        node_env["FAKE_PROMETHEUS_ARGV"] = str(root / "prometheus.argv")
    started = matrix(node_env, "cluster", "start", "c1", "--local", "--prometheus", "--timeout", "300")
    assert started.returncode == 0, started.stderr[-3000:]
    directory = home / "clusters" / "c1"
    try:
        yield env, directory, root
    finally:
        matrix(env, "cluster", "stop", "c1")


def runtime_env_file(root: Path) -> Path:
    """A runtime_env shipping the toy workflow's module to the cluster's workers."""
    code = root / "code"
    code.mkdir(exist_ok=True)
    shutil.copy(TESTS / "toy_workflow.py", code)
    path = root / "runtime_env.yaml"
    path.write_text(f"working_dir: {code}\n")
    return path


def run_toy(env, root: Path, name: str, *where: str) -> list[dict]:
    rows = write_rows(root / f"{name}.in.jsonl", ROWS)
    output = root / f"{name}.jsonl"
    result = matrix(
        env, "run", "toy", "-i", str(rows), "-o", str(output), "-q", "backend.type=toy.null", *where,
        "--runtime-env", str(runtime_env_file(root)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    RUNS.append(name)
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_run_on_the_cluster_and_read_its_metrics(local_cluster):
    env, directory, root = local_cluster
    head = json.loads((directory / "head.json").read_text())
    exporters = Source(endpoints=(head["metrics_endpoint"],))  # one node: every actor runs on the head
    before = read(exporters)
    records = run_toy(env, root, "first", "--cluster", "c1")
    assert sorted(r["id"] for r in records) == sorted(f"t{i}" for i in range(ROWS))
    assert {tuple(r["trail"]) for r in records} == {("a", "b", "c", "a", "b", "c")}

    # straight from Ray's exporter: this run's exact counts (each task: 2 steps per role, 3+5 tokens a step)
    def delta(snapshot, metric: str, *labels: str) -> float:
        return snapshot.total(metric, *labels) - before.total(metric, *labels)

    after = _eventually(lambda: read(exporters), lambda s: delta(s, "tasks_finished", "success") == ROWS)
    assert delta(after, "tasks_admitted") == ROWS
    for role in "abc":
        assert delta(after, "hops", role) == 2 * ROWS
        assert delta(after, "tokens", role, "prompt") == 2 * ROWS * 3
        assert delta(after, "tokens", role, "completion") == 2 * ROWS * 5
        assert after.latency_count[role] - before.latency_count[role] == 2 * ROWS
    assert after.gauges[("tasks_in_flight", ())] == 0


def test_matrix_metrics_reads_the_clusters_prometheus(local_cluster):
    env, _, root = local_cluster
    if not prometheus.executable():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    run_toy(env, root, "for-prometheus", "--cluster", "c1")
    runs = len(RUNS)

    def summary() -> str:
        result = matrix(env, "metrics", "--cluster", "c1", "--once", "--interval", "0.2")
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    done = runs * ROWS
    shown = _eventually(summary, lambda text: re.search(rf"finished: success\s*│\s*{done}\s", text), timeout_s=120)
    assert re.search(rf"admitted\s*│\s*{done}\s", shown)
    for role in "abc":
        assert re.search(rf"│ {role}\s*│\s*{2 * done}\s*│.*│\s*{6 * done}\s*│\s*{10 * done}\s*│", shown), shown


def test_run_by_address(local_cluster):
    env, directory, root = local_cluster
    head = json.loads((directory / "head.json").read_text())
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(directory / "auth_token")}
    records = run_toy({**env, **token}, root, "by-address", "--address", head["address"])
    assert len(records) == ROWS and all(r["status"] == "success" for r in records)


def test_the_head_listens_only_where_it_must(local_cluster):
    """No dashboard unless asked; Prometheus on loopback unless asked; Ray's files in a private directory."""
    _, directory, root = local_cluster
    head = json.loads((directory / "head.json").read_text())
    assert head["dashboard_url"] is None
    assert head["prometheus_url"].startswith("http://127.0.0.1:")
    port = head["prometheus_url"].rsplit(":", 1)[1]
    node = psutil.Process(int(json.loads((directory / "cluster.json").read_text())["head_job"]))
    if prometheus.executable():
        assert {address for address, p, _ in listeners(node) if str(p) == port} == {"127.0.0.1"}
    else:
        assert f"--web.listen-address=127.0.0.1:{port}" in (root / "prometheus.argv").read_text().splitlines()
    from ray.dashboard.consts import DASHBOARD_METRIC_PORT

    tree = [node, *node.children(recursive=True)]
    dashboards = [process for process in tree if "dashboard/dashboard.py" in " ".join(process.cmdline())]
    served = {port for process in dashboards for _, port, _ in listeners(process)} - {DASHBOARD_METRIC_PORT}
    assert served == set(), "Ray's dashboard process serves nothing but its own metrics"
    temp_dir = Path(head["temp_dir"])
    info = temp_dir.lstat()
    assert oct(info.st_mode & 0o777) == "0o700" and info.st_uid == os.getuid() and temp_dir.is_dir()
    assert (temp_dir / "ray" / "ray_current_cluster").exists(), "Ray's own files are inside it"


def test_add_workers_and_status(local_cluster):
    env, directory, _ = local_cluster
    targets = directory / "metrics_targets.json"
    before = len(json.loads(targets.read_text())[0]["targets"])
    added = matrix(env, "cluster", "add-workers", "c1", "1", "--timeout", "300")
    assert added.returncode == 0, added.stderr[-3000:]
    status = matrix(env, "cluster", "status", "c1", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    report = json.loads(status.stdout)
    assert report["ray"]["nodes_alive"] == 2
    assert set(report["jobs"].values()) == {"RUNNING"} and len(report["jobs"]) == 2
    assert report["head"]["dashboard_url"] is None
    _eventually(lambda: len(json.loads(targets.read_text())[0]["targets"]), lambda n: n == before + 1)
    assert (directory / "auth_token").read_text() not in status.stdout + status.stderr + added.stdout + added.stderr
    listed = matrix(env, "cluster", "list", "--json")
    assert [c["name"] for c in json.loads(listed.stdout)] == ["c1"]


def test_stop_leaves_no_process(local_cluster):
    env, directory, _ = local_cluster
    assert processes_of(directory), "the cluster's processes carry its directory in their environment"
    stopped = matrix(env, "cluster", "stop", "c1")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert processes_of(directory) == []
    assert json.loads((directory / "cluster.json").read_text())["stopped"]
    again = matrix(env, "run", "toy", "--cluster", "c1")
    assert again.returncode != 0 and "Error: cluster 'c1' is not running" in again.stderr


def test_a_dashboard_on_request_asks_for_the_token(tmp_path):
    """--dashboard: on the head's own address, behind the cluster's token; --metrics-host opens Prometheus. The
    head's temporary directory is new and private, whatever waits at the path older versions used."""
    home = tmp_path / "home"
    directory = home / "clusters" / "d"
    planted = tmp_path / "planted"
    planted.mkdir()
    old_path = Path(tempfile.gettempdir()) / f"matrix-{zlib.crc32(str(directory).encode()):08x}"
    old_path.unlink(missing_ok=True)
    old_path.symlink_to(planted)
    env = cli_env(home, PATH=f"{fake_prometheus(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    env["FAKE_PROMETHEUS_ARGV"] = str(tmp_path / "prometheus.argv")
    try:
        started = matrix(env, "cluster", "start", "d", "--local", "--dashboard", "--prometheus",
                         "--metrics-host", "0.0.0.0", "--timeout", "300")  # fmt: skip
        assert started.returncode == 0, started.stderr[-3000:]
        head = json.loads((directory / "head.json").read_text())
        ip = head["address"].rsplit(":", 1)[0]
        url = head["dashboard_url"]
        assert url.startswith(f"http://{ip}:") and f"dashboard:  {url} (asks for the cluster's token)" in started.stdout
        node = psutil.Process(int(json.loads((directory / "cluster.json").read_text())["head_job"]))
        port = int(url.rsplit(":", 1)[1])
        assert {address for address, p, _ in listeners(node) if p == port} == {ip}, "the node's address only"

        def status(headers: dict[str, str]) -> int:
            request = urllib.request.Request(f"{url}/api/jobs/", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        token = (directory / "auth_token").read_text().strip()
        assert _eventually(lambda: status({}), lambda code: code == 401) == 401
        assert status({"Authorization": "Bearer not-the-token"}) == 403
        assert status({"Authorization": f"Bearer {token}"}) == 200

        prometheus_port = head["prometheus_url"].rsplit(":", 1)[1]
        assert head["prometheus_url"] == f"http://{ip}:{prometheus_port}"
        argv = (tmp_path / "prometheus.argv").read_text().splitlines()
        assert f"--web.listen-address=0.0.0.0:{prometheus_port}" in argv
        assert f"--config.file={directory / 'prometheus.yml'}" in argv

        temp_dir = Path(head["temp_dir"])
        assert temp_dir != old_path and temp_dir.name.startswith("matrix-")
        assert oct(temp_dir.lstat().st_mode & 0o777) == "0o700"
        assert list(planted.iterdir()) == [], "nothing went through the planted symlink"
    finally:
        stopped = matrix(env, "cluster", "stop", "d")
        old_path.unlink()
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert not temp_dir.exists(), "the head removes its temporary directory when it stops"


def test_a_head_that_never_comes_up_is_a_one_line_error_and_is_stopped(tmp_path):
    env = cli_env(tmp_path / "home")
    result = matrix(env, "cluster", "start", "slow", "--local", "--timeout", "1")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()
    assert line[0].startswith("Error: the head of cluster 'slow' did not become reachable within 1s"), result.stderr
    assert "log: " in line[0] and "Traceback" not in result.stderr
    assert processes_of(tmp_path / "home" / "clusters" / "slow") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cluster", "status", "nope"], "Error: unknown cluster 'nope' (known: none)"),
        (["cluster", "stop", "nope"], "Error: unknown cluster 'nope'"),
        (["cluster", "start", "bad/name", "--local"], "Error: invalid cluster name 'bad/name'"),
        (["cluster", "start", "x", "--slurm", "partition"], "Error: --slurm 'partition': expected KEY=VALUE"),
        (["cluster", "start", "x", "--metrics-host", "0.0.0.0"], "Error: --metrics-host says where Prometheus"),
        (["run", "toy", "--cluster", "nope"], "Error: unknown cluster 'nope'"),
        (["run", "toy", "--cluster", "a", "--address", "auto"], "Error: --cluster and --address exclude each other"),
        (["metrics"], "Error: give exactly one of --cluster NAME, --endpoint HOST:PORT or --prometheus URL"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    result = matrix(cli_env(tmp_path / "home"), *args)
    assert result.returncode != 0
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_no_sbatch_on_path(tmp_path):
    env = cli_env(tmp_path / "home", PATH=str(Path(shutil.which("python") or "/usr/bin/python").parent))
    result = matrix(env, "cluster", "start", "s", "--slurm", "partition=gpu")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: no `sbatch` on PATH: SLURM is not available here"), result.stderr
    assert json.loads((tmp_path / "home/clusters/s/cluster.json").read_text())["stopped"], "nothing left running"


def test_bad_runtime_env_file(tmp_path):
    bad = tmp_path / "env.yaml"
    bad.write_text("- just\n- a list\n")
    result = matrix(cli_env(tmp_path / "home"), "run", "toy", "--runtime-env", str(bad))
    assert result.stderr.startswith(f"Error: --runtime-env {bad}: expected a mapping"), result.stderr


def _eventually(produce, accept, timeout_s: float = 60):
    """``produce()`` until ``accept`` takes it (metrics reach an exporter, then Prometheus, a few seconds late)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = produce()
        if accept(value):
            return value
        assert time.monotonic() < deadline, f"never accepted: {value}"
        time.sleep(1)
