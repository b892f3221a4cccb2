"""The agents of the ``tau2`` workflow: the user simulator and the assistant (LLMs), the tool executor (the
tasks' environments) and the reward agent (tau2's evaluator)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from abc import abstractmethod
from typing import Any, ClassVar

from matrix_core import Agent, AgentContext, BackendError, ChatResponse
from matrix_tau2 import catalog, conversation
from matrix_tau2.config import ChatAgentConfig, RewardConfig, Tau2Config, ToolExecutorConfig, ToolProtocol
from matrix_tau2.environments import EnvironmentStore
from matrix_tau2.scoring import Scorer, predicted_state
from matrix_tau2.workflow import Tau2Orchestrator


class EmptyReplyError(RuntimeError):
    """The model answered with neither text nor tool calls (tau2 rejects such a message); the step is retried."""


def warm_up() -> None:
    """Import tau2 (and litellm, which it imports: seconds) and load the domains while the actor starts, not in its
    first step (the engine then freezes what the actor holds: ``run.gc_threshold``)."""
    from tau2.utils import llm_utils  # noqa: F401 - the conversions every step uses

    catalog.registry()


class _ChatAgent(Agent):
    """One side of the conversation: builds its view of the trajectory, asks its model, records the reply."""

    config_schema = ChatAgentConfig
    side: ClassVar[str]
    """``user`` or ``assistant``: the tau2 role this agent plays."""

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        warm_up()

    async def step(self, task: Tau2Orchestrator) -> Tau2Orchestrator:
        config: ChatAgentConfig = self.context.config
        workflow: Tau2Config = self.context.workflow_config
        sampling = config.sampling or workflow.sampling
        if sampling.seed is None:  # tau2 seeds both sides per trial; here per task and trial, from run.seed
            sampling = dataclasses.replace(sampling, seed=task.seed)
        tools = self.tools(task)
        messages = self.view(task)
        in_prompt = bool(tools) and self.tools_in_prompt()
        if in_prompt:
            messages[0]["content"] = conversation.prompt_with_tools(messages[0]["content"], tools)
            messages = conversation.in_text(messages)
        try:
            response = await self.context.backend.chat(
                messages, sampling, None if in_prompt or not tools else tools, task_id=task.id
            )
        except BackendError as error:
            if error.retryable:
                raise  # the engine tries the step again (run.max_retries), and waits out a backend outage
            # a request the server will never take (HTTP 400: too long a context, say): tau2's agent/user error
            self.context.logger.warning("task %s: %s backend failed: %s", task.id, self.side, error)
            task.error = str(error)
            task.fail("user_error" if self.side == "user" else "agent_error")
            return task
        task.count(self.side, response.usage.prompt_tokens, response.usage.completion_tokens)
        if self.context.backend.config.model:
            task.models[self.side] = self.context.backend.config.model
        task.record_turn(self.message(task, response, in_prompt))
        return task

    def tools_in_prompt(self) -> bool:
        """Whether tools go in the system prompt (see :class:`ToolProtocol`)."""
        protocol: ToolProtocol = self.context.config.tools
        if protocol is ToolProtocol.auto:
            return self.context.backend.config.type == "local"
        return protocol is ToolProtocol.prompt

    @abstractmethod
    def tools(self, task: Tau2Orchestrator) -> list[dict[str, Any]]:
        """This side's tools, as OpenAI tool schemas."""

    @abstractmethod
    def view(self, task: Tau2Orchestrator) -> list[dict[str, Any]]:
        """This side's chat: its system prompt and its view of the trajectory."""

    def message(self, task: Tau2Orchestrator, response: ChatResponse, in_prompt: bool) -> Any:
        """The reply as a tau2 message: text or tool calls, with its usage."""
        from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage

        calls, content = response.tool_calls, response.text
        if in_prompt:
            calls = conversation.calls_in_text(content or "", f"{task.id}_{task.step_count}")
            content = None if calls else content
        requestor = "user" if self.side == "user" else "assistant"
        tool_calls = [
            ToolCall(
                id=call["id"],
                name=call["function"]["name"],
                arguments=json.loads(call["function"]["arguments"] or "{}"),
                requestor=requestor,
            )
            for call in calls
        ]
        kind = UserMessage if self.side == "user" else AssistantMessage
        usage = response.usage
        message = kind(
            role=self.side,
            content=content,
            tool_calls=tool_calls or None,
            cost=0.0,  # no price list for local or self-hosted models; tau2 counts unmapped models as 0.0
            usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
        )
        if not message.is_tool_call() and not message.has_text_content():
            raise EmptyReplyError(f"the {self.side} model sent an empty message")
        return message


class UserSimulator(_ChatAgent):
    """tau2's user simulator: the simulation guidelines and the task's scenario as its system prompt, the
    conversation with roles flipped, and in telecom the user-device tools."""

    side = "user"

    def tools(self, task: Tau2Orchestrator) -> list[dict[str, Any]]:
        return conversation.user_tools(task.domain)

    def view(self, task: Tau2Orchestrator) -> list[dict[str, Any]]:
        prompt = conversation.user_system_prompt(task.domain, task.task_id)
        return conversation.user_view(prompt, task.trajectory())


class Assistant(_ChatAgent):
    """tau2's LLM agent: its instruction plus the domain policy as system prompt, the domain's tools."""

    side = "assistant"

    def tools(self, task: Tau2Orchestrator) -> list[dict[str, Any]]:
        return conversation.assistant_tools(task.domain)

    def view(self, task: Tau2Orchestrator) -> list[dict[str, Any]]:
        return conversation.assistant_view(conversation.assistant_system_prompt(task.domain), task.trajectory())


class ToolExecutor(Agent):
    """Runs tool calls against the environments of the tasks routed to this actor, and drops a task's
    environment once its conversation has ended. Environments are built in a thread: parsing a domain database
    takes tens to hundreds of milliseconds, which must not stall the other tasks' steps."""

    config_schema = ToolExecutorConfig

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        warm_up()
        self.store = EnvironmentStore(context.config.max_environments)

    async def step(self, task: Tau2Orchestrator) -> Tau2Orchestrator:
        if task.termination_reason is not None:  # the conversation ended: what the evaluator will read, then drop
            environment = self.store.drop(task.id)
            if environment is not None:
                task.predicted = await asyncio.to_thread(predicted_state, environment, task.domain, task.task_id)
            task.environment_held = False
            return task
        trajectory = task.trajectory()
        results = await asyncio.to_thread(self.store.run_calls, task.id, task.domain, task.task_id, trajectory)
        task.environment_held = True
        task.record_tool_results(results)
        return task


class Reward(Agent):
    """Scores the finished trajectory with tau2's ``evaluate_simulation`` (``EvaluationType.ALL``), from the
    predicted state the tool executor recorded where there is one (:mod:`matrix_tau2.scoring`)."""

    config_schema = RewardConfig

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        warm_up()
        self.scorer = Scorer(context.config.gold_cache_size)

    async def step(self, task: Tau2Orchestrator) -> Tau2Orchestrator:
        simulation = task.simulation()
        reward_info = await asyncio.to_thread(self.scorer.score, task.domain, task.task_id, simulation, task.predicted)
        task.finish_scored(reward_info)
        return task
