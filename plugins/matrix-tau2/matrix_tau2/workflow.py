"""The ``tau2`` workflow: one tau2-bench simulation per task, with tau2's orchestrator semantics.

The assistant opens ("Hi! How can I help you today?") unless the task starts from a message history. Then the
user simulator and the assistant take turns; a turn with tool calls goes to the tool executor, which runs them
against the task's environment and returns the results to whoever called. Steps, tool errors and stops are counted
as tau2's ``Orchestrator.run`` counts them. Once the conversation ends, the tool executor drops the task's
environment and the reward agent scores the trajectory with tau2's ``evaluate_simulation``.

Roles: ``user`` and ``assistant`` (LLMs), ``tool`` (the environments, routed ``sticky`` so that a task always
reaches the actor holding its environment), ``reward`` (scoring, CPU only).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from matrix_core import DONE, BadRowError, ConfigError, Orchestrator
from matrix_tau2 import catalog
from matrix_tau2.config import Tau2Config
from matrix_tau2.conversation import dump_message, load_messages

if TYPE_CHECKING:
    from tau2.data_model.message import Message

    from matrix_core import Origin, ReportSection, RunMetrics

USER, AGENT, ENV = "user", "agent", "env"
"""tau2's roles: who sent the last message and who receives it."""
ROLE_OF = {USER: "user", AGENT: "assistant", ENV: "tool"}
"""tau2's role -> the Matrix role that plays it."""
AGENT_STOP_TOKEN = "###STOP###"
"""The assistant's stop (tau2's ``LLMSoloAgent.STOP_TOKEN``)."""
TERMINATION_STATUS = {
    "user_stop": "success",
    "agent_stop": "success",
    "max_steps": "max_turns",
    "too_many_errors": "error",
    "agent_error": "error",
    "user_error": "error",
}
"""tau2's termination reason -> the task's Matrix status (its reason is the termination reason)."""


@dataclass(kw_only=True)
class Tau2Orchestrator(Orchestrator):
    """One simulation of one tau2 task: the trajectory (tau2 messages as JSON), whose turn it is, the counters
    tau2's orchestrator keeps, and the reward once scored. The environment is not here: it lives in the tool
    executor that owns the task."""

    roles = {"user": "tau2.user", "assistant": "tau2.assistant", "tool": "tau2.tool", "reward": "tau2.reward"}
    config_key = "tau2"
    config_schema = Tau2Config
    default_config = "matrix_tau2:tau2.yaml"
    profiles = {"demo": "matrix_tau2:demo.yaml"}

    domain: str
    task_id: str
    trial: int = 0
    max_steps: int = 200
    max_errors: int = 10
    validate_communication: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The trajectory so far, each a tau2 message dumped to JSON."""
    from_role: str = AGENT
    to_role: str = USER
    step_count: int = 0
    num_errors: int = 0
    termination_reason: str | None = None
    environment_held: bool = False
    """Whether a tool executor has built this task's environment (and must drop it at the end)."""
    predicted: dict[str, Any] | None = None
    """What tau2's evaluator reads of the environment the conversation left (database hashes, assertions), recorded
    by the tool executor that dropped it; the reward agent scores with it instead of replaying the trajectory."""
    reward_info: dict[str, Any] | None = None
    start_time: str = ""
    end_time: str = ""
    started: float = 0.0
    duration: float = 0.0
    tokens: dict[str, int] = field(default_factory=dict)
    """Tokens per role and kind: ``assistant_prompt``, ``assistant_completion``, ``user_prompt``, ...."""
    models: dict[str, str] = field(default_factory=dict)
    """The model each LLM role used, for tau2's results info."""
    error: str = ""
    """Why a side's backend failed, when one did (``agent_error``, ``user_error``)."""

    @classmethod
    def expand_row(cls, id: str, row: dict[str, Any], config: Tau2Config) -> list[tuple[str, dict[str, Any]]]:
        """A row that names its ``trial`` runs once, as it is. Any other runs ``tau2.num_trials`` times, trial ``t``
        with the id ``<id>/<t>``; with one trial it keeps the row's own id, as before trials applied to rows."""
        if "trial" in row:
            return [(id, row)]
        if config.num_trials == 1:
            return [(id, {**row, "trial": 0})]
        return [(f"{id}/{trial}", {**row, "trial": trial}) for trial in range(config.num_trials)]

    @classmethod
    def check_config(cls, config: Any, origins: Mapping[str, Origin]) -> None:
        """``tau2.task_split`` picks the tasks of the default input: with ``-i`` the rows name theirs, so setting it
        too is refused rather than ignored."""
        split = origins.get("tau2.task_split")
        given = origins.get("input.path")
        if split is not None and split.kind != "default" and given is not None and given.kind != "default":
            raise ConfigError(
                f"{split.where}: tau2.task_split: applies only without -i (the input rows name their tasks)",
                hint="drop tau2.task_split, or drop -i to run the split's tasks",
            )

    @classmethod
    def report(cls, records: Iterable[dict[str, Any]], metrics: RunMetrics) -> list[ReportSection]:
        """Reward and pass^k by domain, termination reasons, tool calls per task and tokens per role
        (:mod:`matrix_tau2.report`)."""
        from matrix_tau2.report import sections

        return sections(records)

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: Tau2Config) -> Tau2Orchestrator:
        """A simulation of the task the row names (``domain``, default ``tau2.domain``; ``task_id``; ``trial``)."""
        from tau2.utils.utils import get_now

        if "task_id" not in row:
            raise BadRowError("the row names no task_id")
        domain, task_id = str(row.get("domain", config.domain)), str(row["task_id"])
        spec = catalog.task(domain, task_id)
        try:
            trial = int(row.get("trial", 0))
        except (TypeError, ValueError):
            raise BadRowError(f"trial: not an integer: {row['trial']!r}") from None
        task = cls(
            id=id,
            row=row,
            domain=domain,
            task_id=task_id,
            trial=trial,
            max_steps=config.max_steps,
            max_errors=config.max_errors,
            validate_communication=config.validate_communication,
            start_time=get_now(),
            started=time.time(),
        )
        history = spec.initial_state.message_history if spec.initial_state is not None else None
        if history:
            task._start_from(deepcopy(history))
        else:
            from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE

            first = deepcopy(DEFAULT_FIRST_AGENT_MESSAGE)
            first.timestamp = get_now()
            task.messages = [dump_message(first)]
        return task

    def _start_from(self, history: list[Message]) -> None:
        """Continue a task's message history, as tau2's ``Orchestrator.initialize`` does."""
        from tau2.data_model.message import AssistantMessage, ToolMessage
        from tau2.orchestrator.orchestrator import Orchestrator as Tau2Orchestrator
        from tau2.user.user_simulator import UserSimulator
        from tau2.utils.utils import format_time

        offset = datetime.now() - timedelta(seconds=len(history))
        for index, message in enumerate(history):  # as tau2's initialize: one second apart, ending now
            message.turn_idx = None
            message.timestamp = format_time(offset + timedelta(seconds=index))
        try:
            Tau2Orchestrator.validate_message_history(history)
        except ValueError as error:
            raise BadRowError(f"task {self.task_id!r}: invalid message history: {error}") from None
        last = history[-1]
        if isinstance(last, AssistantMessage):
            self.from_role, self.to_role = AGENT, ENV if last.is_tool_call() else USER
            if _is_agent_stop(last):
                self.termination_reason = "agent_stop"
        elif isinstance(last, ToolMessage):
            self.from_role, self.to_role = ENV, AGENT if last.requestor == "assistant" else USER
        else:
            self.from_role, self.to_role = USER, ENV if last.is_tool_call() else AGENT
            if UserSimulator.is_stop(last):
                self.termination_reason = "user_stop"
        self.messages = [dump_message(message) for message in history]
        if self.termination_reason is not None:
            self._end()

    # --- routing -------------------------------------------------------------------------------------------------

    def next_role(self) -> str | None:
        if self.status is not None:
            return DONE
        if self.termination_reason is None:
            return ROLE_OF[self.to_role]
        return "tool" if self.environment_held else "reward"

    # --- tau2's step semantics -------------------------------------------------------------------------------------

    def trajectory(self) -> list[Message]:
        """The trajectory as tau2 messages."""
        return load_messages(self.messages)

    def record_turn(self, message: Message) -> None:
        """Add the user's or the assistant's message (whoever's turn it was) and route it on, as tau2's
        ``Orchestrator.step`` does: tool calls to the environment, text to the other side; stops end the task."""
        sender = self.to_role
        if sender == USER:
            from tau2.user.user_simulator import UserSimulator

            if UserSimulator.is_stop(message):
                self.termination_reason = "user_stop"
        elif _is_agent_stop(message):
            self.termination_reason = "agent_stop"
        self.messages.append(dump_message(message))
        self.from_role = sender
        self.to_role = ENV if message.is_tool_call() else (AGENT if sender == USER else USER)
        if self.validate_communication:
            self._check_communication(message)
        self._end_step()

    def record_tool_results(self, results: list[Message]) -> None:
        """Add the results of the last message's tool calls and send them back to the caller."""
        self.messages.extend(dump_message(result) for result in results)
        self.num_errors += sum(1 for result in results if result.error)
        self.to_role, self.from_role = self.from_role, ENV
        self._end_step()

    def _check_communication(self, message: Message) -> None:
        """tau2's ``check_communication_error``: a message must hold text or tool calls, not both, not neither."""
        if message.is_tool_call() == message.has_text_content():
            self.termination_reason = "user_error" if self.from_role == USER else "agent_error"

    def _end_step(self) -> None:
        """Count the step, then apply tau2's limits (only when the next message is not for the environment)."""
        self.step_count += 1
        if self.to_role != ENV:
            if self.step_count >= self.max_steps:
                self.termination_reason = "max_steps"
            if self.num_errors >= self.max_errors:
                self.termination_reason = "too_many_errors"
        if self.termination_reason is not None:
            self._end()

    def step_failed(self, role: str, status: str, reason: str) -> None:
        """A side whose backend failed for good (the engine's retries spent) ends the conversation as tau2 does,
        ``agent_error`` or ``user_error``, and the task is still scored; any other step's failure ends the task."""
        if role in ("user", "assistant") and status == "error" and self.termination_reason is None:
            self.error = reason
            self.fail("user_error" if role == "user" else "agent_error")
        else:
            super().step_failed(role, status, reason)

    def fail(self, termination_reason: str) -> None:
        """End the conversation with an error of one side (its backend failed after its retries)."""
        self.termination_reason = termination_reason
        self._end()

    def _end(self) -> None:
        from tau2.utils.utils import get_now

        self.end_time = get_now()
        self.duration = time.time() - self.started

    def count(self, role: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Add one LLM call's usage to the task's totals and to ``role``'s."""
        self.count_tokens(prompt_tokens, completion_tokens)
        self.tokens[f"{role}_prompt"] = self.tokens.get(f"{role}_prompt", 0) + prompt_tokens
        self.tokens[f"{role}_completion"] = self.tokens.get(f"{role}_completion", 0) + completion_tokens

    # --- output --------------------------------------------------------------------------------------------------

    def finish_scored(self, reward_info: dict[str, Any]) -> None:
        """Attach the reward and end the task with the status its termination reason maps to."""
        self.reward_info = reward_info
        reason = self.termination_reason or "agent_error"
        self.finish(TERMINATION_STATUS[reason], reason)

    def simulation(self) -> dict[str, Any]:
        """The task as a tau2 ``SimulationRun`` (JSON), its messages numbered as tau2's ``get_trajectory`` does.
        They stay in the order recorded: tau2 sorts them by timestamp, which could reorder messages stamped by
        machines whose clocks differ."""
        from tau2.data_model.simulation import SimulationRun
        from tau2.utils.llm_utils import get_cost

        messages = self.trajectory()
        for index, message in enumerate(messages):
            message.turn_idx = index
        costs = get_cost(messages)
        termination = self.termination_reason or ("user_error" if self.to_role == USER else "agent_error")
        run = SimulationRun(
            id=self.id,
            task_id=self.task_id,
            start_time=self.start_time,
            end_time=self.end_time or self.start_time,
            duration=self.duration,
            termination_reason=termination,
            agent_cost=costs[0] if costs else None,
            user_cost=costs[1] if costs else None,
            reward_info=self.reward_info,
            messages=messages,
            trial=self.trial,
            seed=self.seed,
        )
        return run.model_dump(mode="json")

    def to_record(self) -> dict[str, Any]:
        """A tau2 ``SimulationRun`` plus the domain, Matrix's status and reason, the step counts and models."""
        return {
            **self.simulation(),
            **super().to_record(),
            "domain": self.domain,
            "steps": self.step_count,
            "tool_errors": self.num_errors,
            "error": self.error,
            "tokens": self.tokens,
            "models": self.models,
            "max_steps": self.max_steps,
            "max_errors": self.max_errors,
        }

    def metrics(self) -> dict[str, float]:
        """Mean reward, the share of each termination reason, steps, and tokens per role (the run's metrics
        file holds their means over tasks)."""
        reward = (self.reward_info or {}).get("reward") or 0.0
        values = {"reward": float(reward), "steps": float(self.step_count), "tool_errors": float(self.num_errors)}
        for reason in TERMINATION_STATUS:
            values[f"termination_{reason}"] = float(self.termination_reason == reason)
        for key, value in self.tokens.items():
            values[f"tokens_{key}"] = float(value)
        return values


def _is_agent_stop(message: Message) -> bool:
    return not message.is_tool_call() and AGENT_STOP_TOKEN in (message.content or "")
