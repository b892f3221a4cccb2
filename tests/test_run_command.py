"""`matrix run` end to end in its own process: interrupted, killed, resumed, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).parent


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    path = os.pathsep.join([str(TESTS), *sys.path])
    env = {**os.environ, "PYTHONPATH": path, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    command = [sys.executable, "-m", "matrix_core", "run", "toy", "-i", str(tmp_path / "in.jsonl")]
    command += ["-o", str(tmp_path / "out.jsonl"), "-q", "backend.type=toy.null", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for_lines(process: subprocess.Popen, path: Path, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while lines(path) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"fewer than {count} records after {timeout_s}s"
        time.sleep(0.1)


def test_interrupt_kill_and_resume_give_every_id_exactly_once(make_distribution, tmp_path):
    make_distribution("toy-plugin", {}, {"toy": "toy_workflow"})
    rows = [{"id": f"r{i}"} for i in range(120)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    slow = ["run.max_concurrency=4", "agents.b.sleep_s=0.05", "toy.hops=3"]

    interrupted = start(tmp_path, *slow)
    wait_for_lines(interrupted, tmp_path / "out.jsonl", 10)
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 130, stderr
    assert "Error: interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr

    refused = start(tmp_path, *slow)
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 1 and "out.jsonl exists" in stderr

    killed = start(tmp_path, "--resume", *slow)
    wait_for_lines(killed, tmp_path / "out.jsonl", lines(tmp_path / "out.jsonl") + 10)
    killed.kill()
    killed.wait(timeout=60)

    finished = start(tmp_path, "--resume", "agents.b.sleep_s=0.05", "toy.hops=3")  # run.* may change, not those
    _, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(row["id"] for row in rows), "every id exactly once"


def test_a_bad_row_is_one_line_and_skip_bad_rows_records_it(make_distribution, tmp_path):
    make_distribution("toy-plugin", {}, {"toy": "toy_workflow"})
    (tmp_path / "in.jsonl").write_text('{"id": "a"}\n{"id": "b"\n{"id": "c"}\n')
    failed = start(tmp_path)
    _, stderr = failed.communicate(timeout=300)
    assert failed.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith(f"Error: {tmp_path / 'in.jsonl'}:2: invalid JSON")
    assert "Traceback" not in stderr
    (tmp_path / "out.jsonl").unlink(missing_ok=True)
    (tmp_path / "out.metrics.json").unlink(missing_ok=True)

    skipped = start(tmp_path, "--skip-bad-rows")
    _, stderr = skipped.communicate(timeout=300)
    assert skipped.returncode == 0, stderr
    assert sorted(json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()) == ["a", "c"]
    rejected = [json.loads(line) for line in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1 and rejected[0]["where"].endswith("in.jsonl:2")
