"""What each side of a tau2 conversation sees: its system prompt and the trajectory as chat messages.

The trajectory travels in the task as tau2 messages dumped to JSON. Each side's view is built with tau2's own code,
so that the model receives what tau2's runner would send: the assistant sees its history (tau2's
``is_valid_agent_history_message``), the user simulator sees its own with roles flipped (``UserState.flip_roles``),
and both are turned into chat messages by tau2's ``to_litellm_messages``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from matrix_tau2 import catalog

if TYPE_CHECKING:
    from tau2.data_model.message import Message


def load_messages(dumps: list[dict[str, Any]]) -> list[Message]:
    """tau2 message objects from their JSON dumps."""
    from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage

    kinds = {"assistant": AssistantMessage, "user": UserMessage, "tool": ToolMessage}
    return [kinds[dump["role"]].model_validate(dump) for dump in dumps]


def dump_message(message: Message) -> dict[str, Any]:
    """A tau2 message as plain JSON data, to travel in the task."""
    return message.model_dump(mode="json")


def assistant_system_prompt(domain: str) -> str:
    """tau2's agent instruction plus the domain policy."""
    from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT

    return SYSTEM_PROMPT.format(domain_policy=catalog.domain_info(domain).policy, agent_instruction=AGENT_INSTRUCTION)


def user_system_prompt(domain: str, task_id: str) -> str:
    """tau2's user-simulation guidelines (the tool-using ones where the user has tools) plus the task's scenario."""
    from tau2.user.user_simulator import SYSTEM_PROMPT, get_global_user_sim_guidelines

    return SYSTEM_PROMPT.format(
        global_user_sim_guidelines=get_global_user_sim_guidelines(use_tools=bool(user_tools(domain))),
        instructions=str(catalog.task(domain, task_id).user_scenario),
    )


def assistant_tools(domain: str) -> list[dict[str, Any]]:
    """The domain's assistant tools as OpenAI tool schemas."""
    return catalog.domain_info(domain).tools


def user_tools(domain: str) -> list[dict[str, Any]]:
    """The user's device tools (telecom) as OpenAI tool schemas; empty in other domains."""
    return catalog.domain_info(domain).user_tools


def assistant_view(system_prompt: str, trajectory: list[Message]) -> list[dict[str, Any]]:
    """The assistant's chat: its system prompt, then every message it sent or received."""
    from tau2.agent.base import is_valid_agent_history_message
    from tau2.data_model.message import SystemMessage
    from tau2.utils.llm_utils import to_litellm_messages

    history = [message for message in trajectory if is_valid_agent_history_message(message)]
    return _clean(to_litellm_messages([SystemMessage(role="system", content=system_prompt), *history]))


def user_view(system_prompt: str, trajectory: list[Message]) -> list[dict[str, Any]]:
    """The user simulator's chat: its system prompt, then its history with roles flipped (its turns as
    ``assistant``, the agent's as ``user``)."""
    from tau2.data_model.message import SystemMessage
    from tau2.user.base import UserState, is_valid_user_history_message
    from tau2.utils.llm_utils import to_litellm_messages

    system = SystemMessage(role="system", content=system_prompt)
    state = UserState(
        system_messages=[system], messages=[message for message in trajectory if is_valid_user_history_message(message)]
    )
    return _clean(to_litellm_messages([system, *state.flip_roles()]))


def _clean(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop what litellm tolerates and strict OpenAI-compatible servers reject: ``tool_calls: null`` and the
    extra ``name`` beside each call's ``function``."""
    for message in messages:
        if message.get("tool_calls") is None:
            message.pop("tool_calls", None)
        else:
            for call in message["tool_calls"]:
                call.pop("name", None)
    return messages


# --- tools described in the prompt, for backends without tool calling ----------------------------------------

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def prompt_with_tools(system_prompt: str, tools: list[dict[str, Any]]) -> str:
    """``system_prompt`` followed by the tools' schemas and how to call them in text."""
    if not tools:
        return system_prompt
    schemas = "\n".join(json.dumps(tool["function"]) for tool in tools)
    return (
        f"{system_prompt}\n\n<tools>\n{schemas}\n</tools>\n"
        "To call a tool, reply with only one line per call, and no other text:\n"
        '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>\n'
        "Tool results come back as <tool_response>...</tool_response>."
    )


def in_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat with tool calls and tool results written as text, for a model that has no tool-calling API."""
    converted = []
    for message in messages:
        if message["role"] == "tool":
            converted.append({"role": "user", "content": f"<tool_response>{message['content']}</tool_response>"})
        elif message.get("tool_calls"):
            calls = [
                {"name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])}
                for call in message["tool_calls"]
            ]
            text = "\n".join(f"<tool_call>{json.dumps(call)}</tool_call>" for call in calls)
            converted.append({"role": message["role"], "content": text})
        else:
            converted.append(message)
    return converted


def calls_in_text(text: str, call_id_prefix: str) -> list[dict[str, Any]]:
    """The tool calls written in ``text`` as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, in the
    OpenAI shape; a tag that does not hold such JSON is not a call."""
    calls = []
    for number, match in enumerate(_TOOL_CALL.finditer(text)):
        try:
            call = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        arguments = call.get("arguments") if isinstance(call.get("arguments"), dict) else {}
        calls.append(
            {
                "id": f"{call_id_prefix}_{number}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(arguments)},
            }
        )
    return calls
