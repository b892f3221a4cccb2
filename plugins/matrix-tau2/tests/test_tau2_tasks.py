"""The plugin without Ray: registration, default config and task list, task start-up against tau2's orchestrator,
tau2's step limits, and the tool protocol for models without tool calling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matrix_tau2 import catalog, conversation
from matrix_tau2.config import Tau2Config
from matrix_tau2.workflow import AGENT, ENV, USER, Tau2Orchestrator

from matrix_core import BadRowError, ConfigError, resolve_config
from matrix_core.testing import installed_plugins


def resolve(*overrides: str):
    return resolve_config("tau2", overrides=overrides)


def test_the_plugin_registers_its_components():
    info = next(info for info in installed_plugins().infos if info.name == "tau2")
    assert info.status == "ok", info.error
    assert info.components == {
        "orchestrators": ["tau2"],
        "agents": ["tau2.user", "tau2.assistant", "tau2.tool", "tau2.reward"],
        "sinks": ["tau2"],
    }


def test_without_input_the_split_runs_each_task_num_trials_times():
    resolved = resolve("tau2.domain=retail", "tau2.task_split=test", "tau2.num_trials=2")
    assert resolved.config.agents.tool.routing.value == "sticky"
    rows = [json.loads(line) for line in Path(resolved.config.input.path).read_text().splitlines()]
    ids = catalog.split_ids("retail", "test")
    assert len(rows) == 2 * len(ids) == 80
    assert rows[:2] == [
        {"id": f"retail/{ids[0]}/0", "domain": "retail", "task_id": ids[0], "trial": 0},
        {"id": f"retail/{ids[0]}/1", "domain": "retail", "task_id": ids[0], "trial": 1},
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tau2.domain=bank", r"^tau2.domain: unknown tau2 domain 'bank' \(one of: mock, airline, retail, telecom"),
        ("tau2.task_split=dev", r"^tau2.task_split: domain 'airline' has no split 'dev' \(its splits: train, test"),
        ("tau2.num_trials=0", r"^override #1: tau2.num_trials: must be at least 1, got 0$"),
    ],
)
def test_a_bad_task_selection_is_a_one_line_error(override, message):
    with pytest.raises(Exception, match=message):
        resolve(override)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"domain": "bank", "task_id": "1"}, "unknown tau2 domain 'bank'"),
        ({"domain": "airline", "task_id": "9999"}, "unknown task id '9999' in tau2 domain 'airline'"),
        ({"domain": "airline"}, "the row names no task_id"),
        ({"domain": "airline", "task_id": "1", "trial": "x"}, "trial: not an integer"),
    ],
)
def test_a_row_naming_no_known_task_is_a_bad_row(row, message):
    with pytest.raises(BadRowError, match=message):
        Tau2Orchestrator.from_row("r", row, Tau2Config())


def test_an_input_row_naming_no_trial_runs_num_trials_times():
    row, named = {"task_id": "3"}, {"task_id": "3", "trial": 1}
    assert Tau2Orchestrator.expand_row("a", row, Tau2Config(num_trials=2)) == [
        ("a/0", {"task_id": "3", "trial": 0}),
        ("a/1", {"task_id": "3", "trial": 1}),
    ]
    assert Tau2Orchestrator.expand_row("a", row, Tau2Config()) == [("a", {"task_id": "3", "trial": 0})], "its own id"
    assert Tau2Orchestrator.expand_row("a", named, Tau2Config(num_trials=2)) == [("a", named)]


def test_num_trials_is_checked_once_when_resolved(tmp_path):
    settings = tmp_path / "tau2.yaml"
    settings.write_text("tau2:\n  domain: retail\n  num_trials: 0\n")
    with pytest.raises(ConfigError) as raised:
        resolve_config("tau2", config_files=[str(settings)], overrides=["input.path=rows.jsonl"])
    assert str(raised.value) == f"{settings}:3: tau2.num_trials: must be at least 1, got 0"


def test_a_task_opens_with_the_assistant_greeting():
    task = Tau2Orchestrator.from_row("a", {"task_id": "3"}, Tau2Config(domain="airline"))
    assert (task.domain, task.task_id, task.trial) == ("airline", "3", 0)
    assert [(m["role"], m["content"]) for m in task.messages] == [("assistant", "Hi! How can I help you today?")]
    assert (task.from_role, task.to_role, task.next_role()) == (AGENT, USER, "user")


@pytest.mark.parametrize("task_id", ["update_task_with_message_history", "update_task_with_history_and_env_assertions"])
def test_a_message_history_task_starts_where_tau2_starts_it(task_id):
    from tau2.agent.llm_agent import LLMAgent
    from tau2.orchestrator.orchestrator import Orchestrator
    from tau2.user.user_simulator import UserSimulator

    spec = catalog.task("mock", task_id)
    environment = catalog.new_environment("mock")
    agent = LLMAgent(tools=environment.get_tools(), domain_policy=environment.get_policy())
    reference = Orchestrator("mock", agent, UserSimulator(instructions=str(spec.user_scenario)), environment, spec)
    reference.initialize()
    task = Tau2Orchestrator.from_row("m", {"domain": "mock", "task_id": task_id}, Tau2Config())
    assert (task.from_role, task.to_role) == (reference.from_role.value, reference.to_role.value)
    ours = [(m["role"], m["content"], m.get("tool_calls")) for m in task.messages]
    theirs = [(m.role, m.content, getattr(m, "tool_calls", None)) for m in reference.trajectory]
    assert ours == [
        (role, content, [c.model_dump() for c in calls] if calls else None) for role, content, calls in theirs
    ]


def test_steps_and_errors_end_the_task_as_tau2_counts_them():
    from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage, UserMessage

    task = Tau2Orchestrator.from_row(
        "s", {"domain": "mock", "task_id": "create_task_1"}, Tau2Config(max_steps=4, max_errors=1)
    )
    task.record_turn(UserMessage(role="user", content="hello"))
    assert (task.step_count, task.to_role, task.termination_reason) == (1, AGENT, None)
    task.record_turn(AssistantMessage(role="assistant", tool_calls=[ToolCall(id="1", name="x", arguments={})]))
    assert (task.to_role, task.next_role()) == (ENV, "tool")
    task.record_tool_results([ToolMessage(id="1", role="tool", content="Error: no tool x", error=True)])
    assert (task.step_count, task.to_role, task.termination_reason) == (3, AGENT, "too_many_errors")
    assert task.next_role() == "reward"
    task.environment_held = True
    assert task.next_role() == "tool", "the tool executor drops the environment first"

    chatty = Tau2Orchestrator.from_row("c", {"domain": "mock", "task_id": "create_task_1"}, Tau2Config(max_steps=2))
    chatty.record_turn(UserMessage(role="user", content="###STOP###"))
    assert chatty.termination_reason == "user_stop"
    chatty = Tau2Orchestrator.from_row("c", {"domain": "mock", "task_id": "create_task_1"}, Tau2Config(max_steps=2))
    chatty.record_turn(UserMessage(role="user", content="hi"))
    chatty.record_turn(AssistantMessage(role="assistant", content="###STOP### bye"))
    assert chatty.termination_reason == "max_steps", "as in tau2, the step limit is checked after the stop"


def test_tools_in_the_prompt_for_models_without_tool_calling():
    tools = conversation.assistant_tools("mock")
    prompt = conversation.prompt_with_tools("Be kind.", tools)
    assert prompt.startswith("Be kind.\n\n<tools>\n") and '"name": "create_task"' in prompt
    text = 'Sure. <tool_call>{"name": "get_users", "arguments": {}}</tool_call> <tool_call>not json</tool_call>'
    [call] = conversation.calls_in_text(text, "t_3")
    assert call == {"id": "t_3_0", "type": "function", "function": {"name": "get_users", "arguments": "{}"}}
    chat = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": '{"ok": 1}', "tool_call_id": "t_3_0"},
    ]
    assert conversation.in_text(chat) == [
        {"role": "assistant", "content": '<tool_call>{"name": "get_users", "arguments": {}}</tool_call>'},
        {"role": "user", "content": '<tool_response>{"ok": 1}</tool_response>'},
    ]


def test_a_real_server_gets_tau2_benchs_own_settings_and_the_local_backend_the_demo():
    reference = resolve("backend.type=openai", "backend.base_url=http://127.0.0.1:9/v1")
    assert reference.profile is None
    tau2 = reference.config.tau2
    assert (tau2.max_steps, tau2.max_errors, tau2.num_trials) == (200, 10, 1)
    assert (tau2.sampling.temperature, tau2.sampling.max_tokens) == (0.0, None)
    demo = resolve()
    assert (demo.config.tau2.max_steps, demo.config.tau2.sampling.max_tokens) == (20, 96)
    assert (
        demo.profile_note()
        == "demo profile: tau2.max_steps=20 (reference 200), tau2.sampling.max_tokens=96 (reference null), "
        "run.stall_timeout_s=3600.0 (reference 600.0)"
    )


def test_a_split_with_input_rows_is_refused_not_ignored(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"domain": "mock", "task_id": "create_task_1"}\n')
    with pytest.raises(ConfigError, match=r"^override: tau2.task_split: applies only without -i"):
        resolve(f"input.path={rows}", "tau2.task_split=test")
    assert resolve(f"input.path={rows}", "tau2.domain=mock").config.tau2.domain == "mock", "the rows' default domain"
