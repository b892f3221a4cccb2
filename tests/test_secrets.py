"""Secrets given to ``matrix run`` stay off every command line Matrix makes, every screen and every file it writes;
Ray's record of the driver holds no override value."""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matrix_core.testing import FakeOpenAIServer


def random_key(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


def processes_showing(*texts: str) -> dict[int, str]:
    """Every process whose command line (as ``ps`` shows it to any user) holds one of ``texts``."""
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    rows = (line.strip().split(maxsplit=1) for line in listing.splitlines() if line.strip())
    return {int(row[0]): row[1] for row in rows if len(row) == 2 and any(text in row[1] for text in texts)}


def test_ray_records_the_driver_command_line_without_override_values(monkeypatch):
    import psutil
    from ray._private import utils

    from matrix_core.cluster.connect import _entrypoint_without_values

    argv = ["/venv/bin/python", "-m", "matrix_core", "run", "inference", "-q", "backend.api_key=K1", "--api-key", "K2"]
    monkeypatch.setattr(psutil.Process, "cmdline", lambda self: argv)
    recorded = utils.get_entrypoint_name
    with _entrypoint_without_values():
        shown = utils.get_entrypoint_name()
    assert shown == "/venv/bin/python -m matrix_core run inference -q backend.api_key=*** --api-key ***"
    assert utils.get_entrypoint_name is recorded


def test_the_job_table_of_a_real_ray_holds_no_override_value(ray_session):
    import ray

    key = random_key("sk-test-")
    connect = (
        "import sys, ray\n"
        "from matrix_core.cluster.connect import RayTarget\n"
        "RayTarget(address=sys.argv[1]).init()\n"
        "ray.shutdown()\n"
    )
    gcs = ray.get_runtime_context().gcs_address
    driver = subprocess.run(
        [sys.executable, "-c", connect, gcs, f"backend.api_key={key}", "backend.model=m"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert driver.returncode == 0, driver.stderr
    # no public listing of jobs without Ray's dashboard: read the GCS job table as `ray list jobs` would
    [job] = [job for job in ray._private.state.jobs() if job["Entrypoint"].endswith("backend.model=***")]
    assert "backend.api_key=***" in job["Entrypoint"]
    assert key not in json.dumps(ray._private.state.jobs(), default=str)


@pytest.fixture
def slow_server():
    with FakeOpenAIServer(output_tokens=4, latency_s=0.4).in_thread() as running:
        yield running


def test_a_run_keeps_its_keys_off_the_processes_screens_and_files_it_makes(slow_server, tmp_path):
    key, bearer = random_key("sk-test-"), random_key("sk-")
    rows = [{"id": f"q{i}", "text": f"question {i}"} for i in range(8)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    command = [
        sys.executable, "-m", "matrix_core", "run", "inference", "-i", str(tmp_path / "in.jsonl"),
        "-o", str(tmp_path / "out" / "out.jsonl"), "-q", f"backend.base_url={slow_server.base_url}",
        "backend.model=fake-model", f"backend.api_key={key}", f"backend.extra_body.Authorization=Bearer {bearer}",
        "run.max_concurrency=2",
    ]  # fmt: skip
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown_while_serving: list[dict[int, str]] = []
    deadline = time.monotonic() + 240
    while process.poll() is None:
        assert time.monotonic() < deadline, "the run did not end"
        if slow_server.requests:  # its actors are up and calling the server
            shown_while_serving.append(processes_showing(key, bearer))
        time.sleep(0.1)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert shown_while_serving, "the run's actors were seen at work"
    assert process.pid in shown_while_serving[0], "ps shows what the user typed: the check can see a key"
    for shown in shown_while_serving:
        assert set(shown) <= {process.pid}, f"a process Matrix started shows a key: {shown}"

    warnings = [line for line in stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        "Warning: backend.api_key on the command line is visible to other users (ps); "
        "use backend.api_key_env=VAR or a -c file",
        "Warning: backend.extra_body.Authorization on the command line is visible to other users (ps); "
        "use ${oc.env:VAR} in a -c file",
    ]
    assert key not in stdout + stderr and bearer not in stdout + stderr
    written = [path for path in tmp_path.rglob("*") if path.is_file() and path.name != "in.jsonl"]
    assert {path.name for path in written} >= {"out.jsonl", "out.metrics.json", "out.run.json"}
    for path in written:
        assert key.encode() not in path.read_bytes() and bearer.encode() not in path.read_bytes(), path
    assert {request.headers["authorization"] for request in slow_server.requests} == {f"Bearer {key}"}
    bodies = [request.body for request in slow_server.requests if request.path.endswith("/chat/completions")]
    assert {body["Authorization"] for body in bodies} == {f"Bearer {bearer}"}, "the secrets reached the server"
    assert len(Path(tmp_path / "out" / "out.jsonl").read_text().splitlines()) == len(rows)
