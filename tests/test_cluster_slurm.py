"""A cluster on a real one-node SLURM (see slurm_fixture.py): head + 1 worker as submitit jobs, a run with
--cluster, one more worker, then stop: no job and no process of the cluster may be left. Skips where SLURM cannot
start (not root, slurm-wlm not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from cluster_helpers import TESTS, cli_env, matrix, processes_of, toy_site, write_rows
from slurm_fixture import one_node_slurm, unavailable

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_env():
    """The environment variables of a one-node SLURM started for this module."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with one_node_slurm() as env:
        yield env


def test_cluster_on_slurm(slurm_env, tmp_path):
    home = tmp_path / "home"
    # the shared-filesystem case: the jobs see this environment, so the toy plugin is importable on every node
    env = cli_env(home, toy_site(tmp_path), TESTS, **slurm_env)
    directory = home / "clusters" / "s1"
    started = matrix(env, "cluster", "start", "s1", "--slurm", "cpus_per_task=1", "--slurm", "time=30",
                     "--workers", "1", "--timeout", "300")  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        state = json.loads((directory / "cluster.json").read_text())
        jobs = [state["head_job"], *state["worker_jobs"]]
        assert len(jobs) == 2
        script = (directory / "slurm" / f"{state['head_job']}_submission.sh").read_text()
        assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --time=30" in script, "launch scripts are kept"

        rows = write_rows(tmp_path / "in.jsonl", 10)
        output = tmp_path / "out.jsonl"
        run = matrix(env, "run", "toy", "-i", str(rows), "-o", str(output), "-q", "backend.type=toy.null",
                     "--cluster", "s1")  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        records = [json.loads(line) for line in output.read_text().splitlines()]
        assert sorted(r["id"] for r in records) == sorted(f"t{i}" for i in range(10))
        assert all(r["status"] == "success" for r in records)

        added = matrix(env, "cluster", "add-workers", "s1", "1", "--timeout", "300")
        assert added.returncode == 0, added.stderr[-3000:]
        report = json.loads(matrix(env, "cluster", "status", "s1", "--json").stdout)
        assert report["ray"]["nodes_alive"] == 3
        assert report["ray"]["cpus"] == 3, "each node offers Ray only the CPUs SLURM gave its job"
        jobs = list(report["jobs"])
        assert set(report["jobs"].values()) == {"RUNNING"} and len(jobs) == 3
    finally:
        stopped = matrix(env, "cluster", "stop", "s1")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    queue = subprocess.run(
        ["squeue", "-h", "-o", "%i"], env={**os.environ, **slurm_env}, capture_output=True, text=True
    )
    assert not set(queue.stdout.split()) & set(jobs), "every job of the cluster is cancelled"
    assert processes_of(directory) == [], "no process of the cluster is left"


def test_sbatch_refusing_a_job_is_one_line(slurm_env, tmp_path):
    env = cli_env(tmp_path / "home", **slurm_env)
    result = matrix(env, "cluster", "start", "s2", "--slurm", "partition=nosuchpartition", "--timeout", "60")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: sbatch refused the head job: "), result.stderr
    assert "invalid partition" in result.stderr and "Traceback" not in result.stderr


def test_a_head_job_that_ends_before_it_is_up_names_its_log(slurm_env, tmp_path):
    env = cli_env(tmp_path / "home", **slurm_env)
    command = [sys.executable, "-m", "matrix_core", "cluster", "start", "s3", "--timeout", "300"]
    starting = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "home" / "clusters" / "s3" / "cluster.json"
    deadline = time.monotonic() + 120
    while not (state.exists() and json.loads(state.read_text())["head_job"]):
        assert time.monotonic() < deadline and starting.poll() is None, "the head job was never submitted"
        time.sleep(0.1)
    job = json.loads(state.read_text())["head_job"]
    subprocess.run(["scancel", job], env=env, check=True)  # the job ends before Ray is up
    _, stderr = starting.communicate(timeout=300)
    assert starting.returncode == 1
    assert stderr.startswith(f"Error: the head of cluster 's3' failed to start (job {job}: "), stderr
    assert f"log: {tmp_path / 'home' / 'clusters' / 's3' / 'slurm'}" in stderr
    assert processes_of(tmp_path / "home" / "clusters" / "s3") == []
