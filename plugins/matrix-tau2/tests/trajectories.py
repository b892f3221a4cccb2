"""Trajectories built from tau2's tasks, for the parity tests and the scripted conversations: each task's gold
actions replayed against a real environment, so that every tool result is the one tau2 would record."""

from __future__ import annotations

from typing import Any

from matrix_tau2 import catalog, environments


def gold_steps(domain: str, task_id: str) -> list[Any]:
    """The task's expected actions, in order, as tau2 ``Action`` objects."""
    criteria = catalog.task(domain, task_id).evaluation_criteria
    return list(criteria.actions or []) if criteria is not None else []


def closing_text(domain: str, task_id: str) -> str:
    """An assistant message that says everything the task expects to be communicated."""
    criteria = catalog.task(domain, task_id).evaluation_criteria
    info = (criteria.communicate_info or []) if criteria is not None else []
    return " ".join(["All set.", *info])


def gold_simulation(domain: str, task_id: str, *, drop_last_action: bool = False, reason: str = "user_stop") -> dict:
    """A finished simulation (``SimulationRun`` JSON) that performs the task's gold actions: the greeting, the
    user's request, each action as a tool call by its requestor with the real result, the closing message, the
    user's stop."""
    return gold_run(domain, task_id, drop_last_action=drop_last_action, reason=reason)[0]


def gold_run(domain: str, task_id: str, *, drop_last_action: bool = False, reason: str = "user_stop") -> tuple:
    """:func:`gold_simulation`, and the environment its tool calls ran against (as a tool executor holds it)."""
    from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage
    from tau2.data_model.simulation import SimulationRun

    actions = gold_steps(domain, task_id)
    if drop_last_action:
        actions = actions[:-1]
    initial = catalog.task(domain, task_id).initial_state
    history = list(initial.message_history or []) if initial is not None else []
    messages: list[Any] = [*history] if history else [AssistantMessage(role="assistant", content="Hi!")]
    messages.append(UserMessage(role="user", content="Please help."))
    environment = environments.build(domain, task_id, history)
    for number, action in enumerate(actions):
        call = ToolCall(id=f"gold_{number}", name=action.name, arguments=action.arguments, requestor=action.requestor)
        kind = UserMessage if action.requestor == "user" else AssistantMessage
        messages.append(kind(role=action.requestor, tool_calls=[call]))
        messages.append(environment.get_response(call))
        environment.sync_tools()
    messages.append(AssistantMessage(role="assistant", content=closing_text(domain, task_id)))
    messages.append(UserMessage(role="user", content="Thanks. ###STOP###"))
    for index, message in enumerate(messages):
        message.turn_idx = index
    run = SimulationRun(
        id=f"{domain}/{task_id}",
        task_id=task_id,
        start_time="2026-01-01T00:00:00",
        end_time="2026-01-01T00:01:00",
        duration=60.0,
        termination_reason=reason,
        messages=messages,
    )
    return run.model_dump(mode="json"), environment
