"""Plugin code that fails outside ``step()`` ends its own task, never the run; a run that stops making progress
stops, saying where its tasks are; actors' warnings reach the user and ``<stem>.log``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from matrix_core import config
from matrix_core.cli import cli
from matrix_core.engine.actor_logs import ActorLogLine, LogRelay
from matrix_core.engine.run import RunStalled, run_workflow
from matrix_core.errors import ConfigError
from matrix_core.plugins import Plugins
from matrix_core.testing import register_plugin

ROWS = 12
BAD = ["t2", "t7"]


@pytest.fixture
def faulty(toy: Plugins) -> Iterator[Plugins]:
    """The faulty workflow of tests/faulty_workflow.py (on the toy backends), registered in-process."""
    import faulty_workflow

    with register_plugin(faulty_workflow, name="faulty") as loaded:
        yield loaded


def write_input(tmp_path: Path, rows: int = ROWS) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"t{i}"}) + "\n" for i in range(rows)))
    return source


def run_faulty(loaded: Plugins, tmp_path: Path, *overrides: str, workflow: str = "faulty") -> dict:
    items = [f"input.path={tmp_path / 'in.jsonl'}", f"output.path={tmp_path / 'out.jsonl'}"]
    items += ["backend.type=toy.null", "run.quiet=true", "run.max_retries=0", "faulty.hops=4"]
    resolved = config.resolve(
        loaded.registry.get("orchestrators", workflow), loaded.registry, config.parse_overrides([*items, *overrides])
    )
    return run_workflow(resolved, loaded.registry)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


HOOKS = ["from_row", "expand_row", "next_role", "keep", "to_record", "metrics", "step_failed"]


@pytest.mark.parametrize("hook", HOOKS)
def test_a_hook_that_raises_ends_its_own_task_as_error_and_the_run_goes_on(faulty, tmp_path, hook):
    write_input(tmp_path)
    bad = f"[{','.join(BAD)}]"
    failing_step = [f"agents.b.always_fail_ids={bad}"] if hook == "step_failed" else []
    metrics = run_faulty(faulty, tmp_path, f"faulty.fault={hook}", f"faulty.bad_ids={bad}", *failing_step)
    written = records(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in written) == sorted(f"t{i}" for i in range(ROWS)), "every id once"
    by_id = {r["id"]: r for r in written}
    for task_id in BAD:
        assert by_id[task_id]["status"] == "error"
        assert by_id[task_id]["reason"] == f"engine: faulty_workflow.FaultyOrchestrator.{hook} raised KeyError: 'x'"
    assert all(r["status"] == "success" for i, r in by_id.items() if i not in BAD)
    assert metrics.status == {"success": ROWS - len(BAD), "error": len(BAD)}


def test_a_next_role_naming_an_undeclared_role_ends_the_task_naming_it(faulty, tmp_path):
    write_input(tmp_path)
    metrics = run_faulty(faulty, tmp_path, "faulty.fault=undeclared_role", f"faulty.bad_ids=[{BAD[0]}]")
    by_id = {r["id"]: r for r in records(tmp_path / "out.jsonl")}
    assert len(by_id) == ROWS
    assert by_id[BAD[0]]["status"] == "error"
    assert "'z'" in by_id[BAD[0]]["reason"] and "next_role" in by_id[BAD[0]]["reason"]
    assert metrics.status == {"success": ROWS - 1, "error": 1}


def test_a_run_that_stops_making_progress_stops_and_resume_finishes_it(faulty, tmp_path):
    write_input(tmp_path)
    marker = tmp_path / "hang"
    marker.touch()
    hang = [f"agents.b.hang_ids=[{BAD[0]}]", f"agents.b.hang_marker={marker}", "run.stall_timeout_s=3"]
    with pytest.raises(RunStalled) as stalled:
        run_faulty(faulty, tmp_path, *hang)
    message = str(stalled.value)
    assert "\n" not in message
    assert "no task finished and no step completed for 3s" in message
    assert "1 task(s) in flight: role 'b' holds 1 (b#0: 1)" in message
    assert "--resume" in stalled.value.hint
    assert sorted(r["id"] for r in records(tmp_path / "out.jsonl")) == sorted(
        f"t{i}" for i in range(ROWS) if f"t{i}" != BAD[0]
    ), "the finished tasks' records are kept"

    marker.unlink()  # the hang is gone
    metrics = run_faulty(faulty, tmp_path, *hang, "run.resume=true")
    assert (metrics.engine.skipped_finished, metrics.engine.admitted) == (ROWS - 1, 1)
    assert sorted(r["id"] for r in records(tmp_path / "out.jsonl")) == sorted(f"t{i}" for i in range(ROWS))


def test_actor_warnings_and_a_failing_summary_reach_the_user(faulty, tmp_path):
    write_input(tmp_path)
    output = tmp_path / "out.jsonl"
    args = ["run", "faulty_summary", "-i", str(tmp_path / "in.jsonl"), "-o", str(output), "-q"]
    args += ["backend.type=toy.null", f"agents.a.warn_ids=[{BAD[0]}]", "faulty.hops=2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"agent a: warning: task {BAD[0]} looks odd" in result.stderr
    summary = [line for line in result.stderr.splitlines() if "summary raised" in line]
    assert summary == ["warning: faulty_workflow.BrokenSummaryOrchestrator.summary raised KeyError: 'x'"]
    assert f"task {BAD[0]} looks odd" in (tmp_path / "out.log").read_text()
    assert len(records(output)) == ROWS


def test_the_relay_shows_a_few_lines_keeps_them_all_and_redacts(tmp_path):
    shown: list[str] = []
    relay = LogRelay(shown.append, tmp_path / "out.log", burst=2, window_s=3600)
    relay.relay([ActorLogLine(f"agent a: warning: {i} api_key=sk-abcdefghijklmnopqrstuvwx", "") for i in range(5)])
    relay.close()
    assert shown[:2] == ["agent a: warning: 0 api_key=***", "agent a: warning: 1 api_key=***"]
    assert shown[2:] == [f"3 more warnings in {tmp_path / 'out.log'}"]
    kept = (tmp_path / "out.log").read_text().splitlines()
    assert len(kept) == 5 and all("sk-" not in line for line in kept)


def test_a_negative_stall_timeout_is_refused(faulty, tmp_path):
    with pytest.raises(ConfigError, match=r"run.stall_timeout_s: must be at least 0, got -1"):
        config.resolve(
            faulty.registry.get("orchestrators", "faulty"),
            faulty.registry,
            config.parse_overrides(["backend.type=toy.null", "run.stall_timeout_s=-1"]),
        )
