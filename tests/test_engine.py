"""The engine on a real local Ray: routing, bounds, retries, exactly-once output, offloading and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matrix_core import config
from matrix_core.backends import BackendError
from matrix_core.engine.run import run_workflow
from matrix_core.errors import MatrixError
from matrix_core.metrics import RunMetrics
from matrix_core.orchestrator import Orchestrator


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_on(loaded, source: Path, output: Path, *overrides: str) -> dict:
    """Run the toy workflow over ``source``; returns the metrics."""
    items = [f"input.path={source}", f"output.path={output}", "backend.type=toy.null", "run.quiet=true"]
    resolved = config.resolve(
        loaded.registry.get("orchestrators", "toy"), loaded.registry, config.parse_overrides([*items, *overrides])
    )
    return run_workflow(resolved, loaded.registry)


def run_toy(loaded, tmp_path: Path, *overrides: str, rows: int = 40, name: str = "out.jsonl") -> tuple[dict, list]:
    """Run the toy workflow over ``rows`` generated rows; returns the metrics and the output records."""
    source = write_rows(tmp_path / "in.jsonl", [{"id": f"t{i}", "n": i} for i in range(rows)])
    metrics = run_on(loaded, source, tmp_path / name, *overrides)
    records = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
    return metrics, records


def test_tasks_move_through_three_roles(toy, tmp_path):
    metrics, records = run_toy(toy, tmp_path, "agents.b.replicas=2", "toy.hops=7")
    assert sorted(r["id"] for r in records) == sorted(f"t{i}" for i in range(40))
    assert {tuple(r["trail"]) for r in records} == {("a", "b", "c", "a", "b", "c", "a")}
    assert metrics.status == {"success": 40}
    assert metrics.hops == 40 * 7
    assert metrics.tokens_in == 40 * 7 * 3 and metrics.tokens_out == 40 * 7 * 5
    assert metrics.workflow == {"trail_length": 7.0}
    on_disk = json.loads((tmp_path / "out.metrics.json").read_text())
    assert on_disk["status_reason"] == {"success": 40} and on_disk["hops"] == 40 * 7, "metrics.json is flat"
    assert RunMetrics.from_json(on_disk) == metrics


def test_task_seeds_derive_from_run_seed_and_id(toy, tmp_path):
    _, first = run_toy(toy, tmp_path, "run.seed=1", rows=5, name="a.jsonl")
    _, again = run_toy(toy, tmp_path, "run.seed=1", rows=5, name="b.jsonl")
    _, other = run_toy(toy, tmp_path, "run.seed=2", rows=5, name="c.jsonl")
    seeds = [{r["id"]: r["seed"] for r in records} for records in (first, again, other)]
    assert seeds[0] == seeds[1]
    assert len(set(seeds[0].values())) == 5
    assert not set(seeds[0].values()) & set(seeds[2].values())


@pytest.mark.parametrize("routing", ["round_robin", "sticky"])
def test_other_routing_policies(toy, tmp_path, routing):
    overrides = [f"agents.{role}.{key}" for role in "abc" for key in (f"routing={routing}", "replicas=2")]
    metrics, records = run_toy(toy, tmp_path, *overrides, rows=20)
    assert metrics.status == {"success": 20} and len(records) == 20


def test_in_flight_bounds_are_never_exceeded(toy, tmp_path):
    metrics, records = run_toy(
        toy,
        tmp_path,
        "run.max_concurrency=5",
        "agents.a.max_in_flight=2",
        "agents.a.sleep_s=0.02",
        "agents.b.sleep_s=0.02",
        rows=30,
    )
    assert len(records) == 30
    assert 1 <= metrics.engine.peak_in_flight <= 5
    assert 1 <= metrics.engine.most_steps_at_once["a"] <= 2
    assert metrics.engine.most_steps_at_once["b"] <= 5


def test_failing_steps_are_retried_then_recorded_as_errors(toy, tmp_path):
    metrics, records = run_toy(
        toy,
        tmp_path,
        "run.retry_backoff_s=0.001",
        "run.max_retries=3",
        "agents.b.fail_percent=10",
        "agents.c.always_fail_ids=[t3,t7]",
    )
    by_id = {r["id"]: r for r in records}
    assert len(records) == len(by_id) == 40, "every id exactly once"
    flaky_failures = sum(len(r["failed_hops"]) for r in records)
    assert flaky_failures > 0
    assert metrics.engine.retries == flaky_failures + 2 * 3, (
        "each flaky step retried once, each always-failing one 3 times"
    )
    for failed in ("t3", "t7"):
        assert by_id[failed]["status"] == "error"
        assert by_id[failed]["reason"] == f"RuntimeError: {failed} always fails"
    assert metrics.status == {"success": 38, "error": 2}, metrics.status_reason
    assert metrics.status_reason["error:RuntimeError: t3 always fails"] == 1
    assert all(r["trail"] == ["a", "b", "c", "a", "b", "c"] for r in records if r["status"] == "success")


def test_a_role_backend_failing_its_start_up_check_stops_the_run_with_its_message(toy, tmp_path):
    slow_a, refusing_b = "agents.a.backend.type=toy.slow_start", "agents.b.backend.type=toy.refusing"
    with pytest.raises(BackendError, match=r"^toy server does not serve model 'nope'$"):
        run_toy(toy, tmp_path, slow_a, refusing_b, rows=3)


def test_a_content_filter_refusal_ends_the_task_filtered_without_retries(toy, tmp_path):
    metrics, records = run_toy(toy, tmp_path, "run.max_retries=3", "agents.b.refused_ids=[t5]")
    by_id = {r["id"]: r for r in records}
    assert (by_id["t5"]["status"], by_id["t5"]["reason"]) == ("filtered", "content_filter")
    assert by_id["t5"]["attempts"] == 2, "a once, b once: a refusal is not retried"
    assert metrics.engine.retries == 0
    assert metrics.status_reason["filtered:content_filter"] == 1


@pytest.mark.parametrize("offload", [False, True], ids=["inline", "offloaded"])
def test_a_killed_actor_loses_nothing(toy, tmp_path, offload):
    marker = tmp_path / "died"
    # offloaded: the dead actor owned history texts other tasks still refer to; those tasks start again
    texts = ["toy.text_bytes=500", "run.offload_threshold_bytes=100"] if offload else []
    metrics, records = run_toy(
        toy,
        tmp_path,
        "agents.b.replicas=2",
        "agents.b.sleep_s=0.05",
        "agents.b.die_on_id=t5",
        f"agents.b.die_marker={marker}",
        *texts,
        rows=60,
    )
    assert marker.exists(), "the actor really died"
    # its tasks were admitted again, or (when it died before acknowledging them) re-sent by their senders
    assert metrics.engine.readmitted + metrics.engine.rerouted >= 1
    assert sorted(r["id"] for r in records) == sorted(f"t{i}" for i in range(60))
    assert metrics.status == {"success": 60}
    if offload:
        assert all(r["texts"] == [f"{r['id']}:{i}:" + "x" * 500 for i in range(1, 7)] for r in records)


def test_large_history_texts_round_trip_through_the_object_store(toy, tmp_path):
    metrics, records = run_toy(toy, tmp_path, "toy.text_bytes=5000", "run.offload_threshold_bytes=1000", rows=10)
    assert metrics.engine.offloaded_texts == 10 * 6, "each turn's text stored once, then passed by reference"
    record = next(r for r in records if r["id"] == "t4")
    assert record["texts"] == [f"t4:{i}:" + "x" * 5000 for i in range(1, 7)]


def test_resume_skips_finished_ids_and_recovers_a_torn_line(toy, tmp_path):
    output = tmp_path / "out.jsonl"
    output.write_text('{"id": "t0", "status": "success", "reason": "", "trail": []}\n{"id": "t1", "sta')
    metrics, records = run_toy(toy, tmp_path, "run.resume=true", rows=5)
    assert [r["id"] for r in records].count("t0") == 1
    assert sorted(r["id"] for r in records) == ["t0", "t1", "t2", "t3", "t4"]
    assert metrics.engine.skipped_finished == 1 and metrics.engine.admitted == 4


def test_an_existing_output_is_never_overwritten(toy, tmp_path):
    (tmp_path / "out.jsonl").write_text('{"id": "old"}\n')
    with pytest.raises(MatrixError, match=r"out\.jsonl exists"):
        run_toy(toy, tmp_path)
    assert (tmp_path / "out.jsonl").read_text() == '{"id": "old"}\n'


def test_a_malformed_row_stops_the_run_naming_file_and_line(toy, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a"}\n{"id": "b"}\nnot json\n')
    with pytest.raises(MatrixError, match=r"in\.jsonl:3: invalid JSON"):
        run_on(toy, source, tmp_path / "o.jsonl")


def test_duplicate_ids_in_the_input_are_an_error(toy, tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"id": "a"}, {"id": "b"}, {"id": "a"}])
    with pytest.raises(MatrixError, match=r"in\.jsonl:3: duplicate id 'a' \(first at .*in\.jsonl:1\)"):
        run_on(toy, source, tmp_path / "o.jsonl")


def test_partitions_split_the_input(toy, tmp_path):
    metrics, records = run_toy(toy, tmp_path, "run.partitions=3", "run.max_concurrency=4", rows=31)
    assert sorted(r["id"] for r in records) == sorted(f"t{i}" for i in range(31))
    assert metrics.engine.admitted == 31


def test_by_default_a_row_is_one_task_with_its_own_id():
    assert Orchestrator.expand_row("a", {"text": "x"}, None) == [("a", {"text": "x"})]


def test_a_row_a_workflow_expands_runs_once_per_task_and_resumes_by_task(toy, tmp_path):
    rows = [{"id": "a", "copies": 2}, {"id": "b"}, {"id": "c", "copies": 3}, {"id": "d", "copies": "x"}, {"id": "e"}]
    source, output = write_rows(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    options = ["run.partitions=2", "input.skip_bad_rows=true"]
    metrics = run_on(toy, source, output, *options, "run.limit=4")
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["a/0", "a/1", "b", "c/0", "c/1", "c/2"], "--limit counts rows"
    assert len({r["seed"] for r in records}) == 6
    assert metrics.rejected_rows == 1, "the bad row, once: only its own partition reports it"

    metrics = run_on(toy, source, output, *options, "run.resume=true")
    assert (metrics.engine.skipped_finished, metrics.engine.admitted) == (6, 1)
    ids = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert sorted(ids) == ["a/0", "a/1", "b", "c/0", "c/1", "c/2", "e"]


def test_an_expanded_id_may_not_repeat_another(toy, tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"id": "a", "copies": 2}, {"id": "a/1"}])
    with pytest.raises(MatrixError, match=r"in\.jsonl:2: duplicate id 'a/1' \(first at .*in\.jsonl:1\)"):
        run_on(toy, source, tmp_path / "o.jsonl")


def test_counters_reach_prometheus(toy, ray_session, tmp_path):
    import time
    import urllib.request

    run_toy(toy, tmp_path, rows=5)
    wanted = ("ray_matrix_hops", "ray_matrix_tasks_finished", "ray_matrix_tokens", "ray_matrix_inbox_depth")
    deadline = time.monotonic() + 90
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{ray_session}/metrics", timeout=10) as response:
            exported = response.read().decode()
        missing = [name for name in wanted if name not in exported]
        if not missing:
            break
        assert time.monotonic() < deadline, f"never exported: {missing}"
        time.sleep(1)
    assert 'role="a"' in exported and 'status="success"' in exported


def test_tasks_a_workflow_does_not_keep_count_as_finished_for_resume(toy, tmp_path):
    failing = ["toy.keep_errors=false", "agents.c.always_fail_ids=[t1]", "run.max_retries=0"]
    metrics, records = run_toy(toy, tmp_path, *failing, rows=4)
    assert sorted(r["id"] for r in records) == ["t0", "t2", "t3"]
    dropped = [json.loads(line) for line in (tmp_path / "out.dropped.jsonl").read_text().splitlines()]
    assert dropped == [{"id": "t1", "status": "error", "reason": "RuntimeError: t1 always fails"}]
    assert metrics.status == {"success": 3, "error": 1}

    metrics, _ = run_toy(toy, tmp_path, *failing, "run.resume=true", rows=6)
    assert metrics.engine.skipped_finished == 4, "t1 is finished too: it is not run again"
    assert metrics.engine.admitted == 2
