"""`matrix run tau2` end to end: real Ray actors, real tau2 environments and evaluator, against the project's test
server playing both sides of each conversation (tests/script.py). One run covers everything (starting the actors
is most of its cost): every way a conversation ends, a task continued with ``--resume``, and a tool executor killed
while a task it holds an environment for waits at the assistant."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from script import AGENT_STOP, BAD_TOOL, CHATTY, FAIL_ASSISTANT, Script
from test_tau2_parity import tau2_reward
from trajectories import gold_simulation

from matrix_core.cli import cli
from matrix_core.testing import FakeOpenAIServer, register_plugin

TELECOM = "[mobile_data_issue]user_abroad_roaming_enabled_off[PERSONA:None]"
GOLD_TASKS = [
    ("mock", "create_task_1"),
    ("mock", "update_task_with_message_history"),  # starts from a message history
    ("airline", "1"),
    ("telecom", TELECOM),  # the user calls a device tool
]
PLANS = {
    "update_task_1": AGENT_STOP,
    "impossible_task_1": CHATTY,
    "create_task_1_nl_eval": BAD_TOOL,
    "update_task_with_initialization_actions": FAIL_ASSISTANT,
}
KILLED = ("retail", "71")  # two writes: the second sees the first only if the rebuilt environment replayed it
TASKS = [*GOLD_TASKS, *(("mock", task_id) for task_id in PLANS), KILLED]
RESUMED = ("retail", "72")
"""Finished in an earlier run: its record is in the output before the run starts."""


def write_rows(path: Path, tasks: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"id": f"{d}/{t}", "domain": d, "task_id": t}) + "\n" for d, t in tasks))
    return path


def run(server: FakeOpenAIServer, *args: str, workflow: str) -> None:
    options = [
        "backend.type=openai",
        f"backend.base_url={server.base_url}",
        "run.retry_backoff_s=0.01",
        "tau2.max_steps=12",
        "tau2.max_errors=3",
        "agents.reward.replicas=1",  # one actor fewer to start: scoring a few tasks needs no second core
        "-q",
    ]
    result = CliRunner().invoke(cli, ["run", workflow, *options, *args])
    assert result.exit_code == 0, result.output


def read(path: Path) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory) -> tuple[Path, Script, FakeOpenAIServer, list[int]]:
    """One run over every scripted task, continuing an output that holds RESUMED's record, with the workflow
    whose tool executors note their process id (tests/dying.py) so that one can be killed."""
    import dying

    tmp = tmp_path_factory.mktemp("run")
    output = tmp / "out.jsonl"
    output.write_text(json.dumps(finished_record(*RESUMED)) + "\n")
    pid_file = tmp / "tool.pid"
    killed: list[int] = []

    def kill_after_first_write(task_id: str, results: int) -> None:
        if task_id == KILLED[1] and results == 1 and not killed:
            killed.append(int(pid_file.read_text()))
            os.kill(killed[0], signal.SIGKILL)

    script = Script([*TASKS, RESUMED], PLANS)
    script.before_assistant = kill_after_first_write
    rows = write_rows(tmp / "in.jsonl", [*TASKS, RESUMED])
    with register_plugin(dying, name="tau2test"), FakeOpenAIServer(reply=script).in_thread() as server:
        options = [f"agents.tool.pid_file={pid_file}", f"agents.tool.task_id={KILLED[1]}", "--resume"]
        run(server, "-i", str(rows), "-o", str(output), *options, workflow="tau2test")
    return output, script, server, killed


def finished_record(domain: str, task_id: str) -> dict[str, Any]:
    """A record as an earlier run wrote it: a solved simulation, scored."""
    simulation = gold_simulation(domain, task_id)
    simulation.update(id=f"{domain}/{task_id}", agent_cost=0.0, user_cost=0.0)
    simulation["reward_info"] = tau2_reward(domain, task_id, simulation)
    fields = {"status": "success", "reason": "user_stop", "domain": domain, "tokens": {}, "models": {}}
    return {**simulation, **fields, "max_steps": 12, "max_errors": 3}


def test_records_are_tau2_simulations_with_tau2_rewards(finished):
    from tau2.data_model.simulation import SimulationRun

    output = finished[0]
    records = read(output)
    assert len(records) == len(output.read_text().splitlines()), "each task once"
    assert set(records) == {f"{d}/{t}" for d, t in [*TASKS, RESUMED]}
    for domain, task_id in [*GOLD_TASKS, KILLED]:
        record = records[f"{domain}/{task_id}"]
        run = SimulationRun.model_validate(record)
        assert (run.termination_reason.value, record["status"], record["domain"]) == ("user_stop", "success", domain)
        assert record["reward_info"] == tau2_reward(domain, task_id, record)
        assert record["reward_info"]["reward"] == 1.0, task_id


def test_tool_results_go_back_to_the_caller(finished):
    records = read(finished[0])
    for record in records.values():
        messages = record["messages"]
        for index, message in enumerate(messages):
            if message["role"] == "tool":
                caller = next(m for m in reversed(messages[:index]) if m["role"] != "tool")
                assert message["requestor"] == caller["role"]
                assert message["id"] in {call["id"] for call in caller["tool_calls"]}
            if message["role"] in ("user", "assistant"):
                assert (message["content"] is None) != (message["tool_calls"] is None), "text or tool calls"
    telecom = records[f"telecom/{TELECOM}"]["messages"]
    user_calls = [m for m in telecom if m["role"] == "user" and m["tool_calls"]]
    assert [call["name"] for m in user_calls for call in m["tool_calls"]] == ["toggle_roaming"]
    assert telecom[telecom.index(user_calls[0]) + 1]["requestor"] == "user"


def test_every_stop_reason(finished):
    records = read(finished[0])

    def outcome(task_id: str) -> tuple[str, str, str, float]:
        record = records[f"mock/{task_id}"]
        return record["termination_reason"], record["status"], record["reason"], record["reward_info"]["reward"]

    assert outcome("create_task_1") == ("user_stop", "success", "user_stop", 1.0)
    assert outcome("update_task_1") == ("agent_stop", "success", "agent_stop", 0.0)
    assert outcome("impossible_task_1") == ("max_steps", "max_turns", "max_steps", 0.0)
    assert outcome("create_task_1_nl_eval") == ("too_many_errors", "error", "too_many_errors", 0.0)
    assert outcome("update_task_with_initialization_actions") == ("agent_error", "error", "agent_error", 0.0)
    chatty = records["mock/impossible_task_1"]
    assert chatty["steps"] == 12
    errors = records["mock/create_task_1_nl_eval"]
    assert errors["tool_errors"] == 3
    assert all(m["content"].startswith("Error: ") for m in errors["messages"] if m["role"] == "tool")
    assert "HTTP 500" in records["mock/update_task_with_initialization_actions"]["error"]


def test_message_history_tasks_continue_their_history(finished):
    from matrix_tau2 import catalog

    record = read(finished[0])["mock/update_task_with_message_history"]
    history = catalog.task("mock", "update_task_with_message_history").initial_state.message_history
    assert [m["content"] for m in record["messages"][: len(history)]] == [m.content for m in history]
    assert record["messages"][len(history)]["content"] == "task:mock:update_task_with_message_history"


def test_requests_follow_tau2_prompts_and_sampling(finished):
    from matrix_tau2 import conversation

    server = finished[2]
    bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]
    assistant = [b for b in bodies if b["messages"][0]["content"].startswith("<instructions>")]
    user = [b for b in bodies if b not in assistant]
    assert assistant and user
    assert {b["temperature"] for b in bodies} == {0.0}
    for body in assistant:
        opening = next(m["content"] for m in body["messages"] if (m["content"] or "").startswith("task:"))
        domain = opening.split(":")[1]
        assert body["messages"][0]["content"] == conversation.assistant_system_prompt(domain)
        assert body["tools"] == conversation.assistant_tools(domain)
    for body in user:
        domain, task_id = next(
            t for t in TASKS if str(catalog_task(*t).user_scenario) in body["messages"][0]["content"]
        )
        assert body["messages"][0]["content"] == conversation.user_system_prompt(domain, task_id)
        assert body.get("tools") == (conversation.user_tools(domain) or None), "device tools only in telecom"
    first_user = next(b for b in user if len(b["messages"]) == 2)
    assert first_user["messages"][1] == {"role": "user", "content": "Hi! How can I help you today?"}


def catalog_task(domain: str, task_id: str):
    from matrix_tau2 import catalog

    return catalog.task(domain, task_id)


def test_results_files_for_tau2(finished):
    from tau2.data_model.simulation import Results

    output = finished[0]
    results = Results.model_validate_json(output.with_name("out.mock.tau2.json").read_text())
    assert len(results.simulations) == 2 + len(PLANS)
    assert {task.id for task in results.tasks} == {t for d, t in TASKS if d == "mock"}
    metrics = json.loads(output.with_name("out.tau2-metrics.json").read_text())
    assert set(metrics) == {"mock", "airline", "telecom", "retail"}
    assert metrics["retail"]["simulations"] == 2, "the resumed record is reported too"
    mock = metrics["mock"]
    assert mock["termination"] == {
        "user_stop": 2,
        "agent_stop": 1,
        "max_steps": 1,
        "too_many_errors": 1,
        "agent_error": 1,
    }
    assert mock["avg_reward"] == pytest.approx(2 / 6)
    assert mock["pass_hat_1"] == pytest.approx(2 / 6)
    assert mock["tokens"]["assistant_prompt"] > 0 and mock["tokens"]["user_completion"] > 0
    run_metrics = json.loads(output.with_name("out.metrics.json").read_text())
    assert run_metrics["workflow"]["termination_user_stop"] == pytest.approx(5 / len(TASKS)), "this run's tasks"


def test_resume_runs_only_unfinished_tasks(finished):
    output, script = finished[0], finished[1]
    earlier = json.loads(output.read_text().splitlines()[0])  # written before the run started
    assert earlier["id"] == f"{RESUMED[0]}/{RESUMED[1]}"
    assert read(output)[earlier["id"]] == earlier, "kept as it was, once"
    assert RESUMED[1] not in {task_id for task_id, _ in script.calls}, "its conversation did not run again"


def test_an_environment_is_rebuilt_after_its_actor_died(finished):
    output, script, killed = finished[0], finished[1], finished[3]
    assert killed, "a tool executor was killed while the task waited at the assistant"
    record = read(output)[f"{KILLED[0]}/{KILLED[1]}"]
    assert record["reward_info"]["reward"] == 1.0, "the rebuilt environment held the first write"
    assert script.calls[(KILLED[1], "assistant")] == 3, "two calls and the closing: it went on, not from the start"
