"""What Matrix opens to the network: a plain `matrix run` (a private Ray) listens on loopback only, in every
process it starts; a Ray too old for token authentication may not start or join a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner
from cluster_helpers import cli_env, is_loopback, listeners

from matrix_core.cli import cli
from matrix_core.cluster import connect
from matrix_core.cluster.connect import LOOPBACK_ONLY, RayTarget
from matrix_core.cluster.state import ClusterError
from matrix_core.testing import FakeOpenAIServer


def test_a_plain_run_listens_on_loopback_only(tmp_path):
    """The run in its own process, as a user starts it: not inside this test process, whose Ray is set up apart."""
    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"id": f"q{i}", "text": f"question {i}"}) + "\n" for i in range(8)))
    env = cli_env(tmp_path / "home")
    env.pop(LOOPBACK_ONLY, None)  # as in a user's shell: this test process has it set by importing matrix_core
    output = tmp_path / "out.jsonl"
    with FakeOpenAIServer(latency_s=1.0, output_tokens=4).in_thread() as server:
        run = subprocess.Popen(
            [sys.executable, "-m", "matrix_core", "run", "inference", "-i", str(rows), "-o", str(output), "-q",
             f"backend.base_url={server.base_url}", "backend.model=fake-model", "run.max_concurrency=2"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen: set[tuple[str, int, str]] = set()
        root = psutil.Process(run.pid)
        while run.poll() is None:  # every socket opened at any time of the run, until it ends
            seen |= listeners(root)
            time.sleep(0.2)
        _, stderr = run.communicate()
    assert run.returncode == 0, stderr[-3000:]
    assert len(output.read_text().splitlines()) == 8
    assert any(name == "gcs_server" for _, _, name in seen), f"the run's Ray was never seen listening: {seen}"
    assert {entry for entry in seen if not is_loopback(entry[0])} == set()


@pytest.fixture
def ray_2_51(monkeypatch):
    """The installed Ray, reporting itself as 2.51 (the last one without token authentication)."""
    monkeypatch.setattr(connect, "ray_version", lambda: "2.51.0")


def test_an_old_ray_may_not_start_a_cluster(ray_2_51, tmp_path):
    result = CliRunner().invoke(
        cli, ["cluster", "start", "old", "--local"], env={"MATRIX_HOME": str(tmp_path)}, prog_name="matrix"
    )
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "Error: a cluster needs Ray 2.52 or later (token authentication); this is Ray 2.51.0"
    )
    assert not (tmp_path / "clusters" / "old").exists(), "nothing was started"


def test_an_old_ray_may_not_join_one(ray_2_51):
    with pytest.raises(ClusterError, match=r"^joining Ray at 127\.0\.0\.1:1 needs Ray 2\.52 or later"):
        RayTarget("127.0.0.1:1").init()


def test_a_private_ray_is_refused_where_ray_was_imported_first(monkeypatch):
    """A library caller that imported ray before matrix_core (the variable unset then) would get Ray's default."""
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setenv(LOOPBACK_ONLY, "0")
    with pytest.raises(ClusterError, match=rf"^ray was imported before {LOOPBACK_ONLY}=0 was set: a private Ray"):
        RayTarget().init()


def test_planted_cluster_directories_are_refused(tmp_path):
    target = tmp_path / "theirs"
    target.mkdir()
    (tmp_path / "home" / "clusters").mkdir(parents=True)
    (tmp_path / "home" / "clusters" / "planted").symlink_to(target)
    result = CliRunner().invoke(
        cli,
        ["cluster", "start", "planted", "--local"],
        env={"MATRIX_HOME": str(tmp_path / "home")},
        prog_name="matrix",
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {tmp_path / 'home/clusters/planted'} is a symlink"), result.output
    assert list(target.iterdir()) == [], "nothing was written through the symlink"


def test_head_temp_dirs_are_private_and_new():
    from matrix_core.cluster.node import private_temp_dir

    first, second = private_temp_dir(), private_temp_dir()
    try:
        assert first != second and first.name.startswith("matrix-")
        assert oct(first.stat().st_mode & 0o777) == "0o700" and not first.is_symlink()
    finally:
        first.rmdir()
        second.rmdir()
