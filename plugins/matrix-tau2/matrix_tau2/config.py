"""``tau2.*`` and the agents' own options, typed so that omegaconf rejects unknown keys and values."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from matrix_core import AgentConfig, Sampling, at_least


@dataclass
class Tau2Config:
    """``tau2.*``. The defaults are tau2's own (``tau2 run``): 200 steps, 10 tool errors, temperature 0."""

    domain: str = "airline"
    """The domain whose tasks run when no ``-i`` names tasks: airline, retail, telecom, telecom-workflow, mock."""
    task_split: str = "base"
    """The split of the domain's tasks, as tau2 names it (base, train, test; telecom also small, full)."""
    num_trials: int = 1
    """Trials per task, each with its own id and seed: without ``-i``, the generated rows list every trial
    (``airline/12/1``); an input row that names no ``trial`` runs this many times (``<id>/0``, ``<id>/1``, ...; its
    own id when 1), one that names its ``trial`` once."""
    max_steps: int = 200
    max_errors: int = 10
    """Tool calls that may fail (``Error: ...`` results) before the task ends as ``too_many_errors``."""
    validate_communication: bool = False
    """tau2's ``--enforce-communication-protocol``: a message with both text and tool calls, or neither, ends the
    task as ``agent_error``/``user_error`` instead of being passed on."""
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.0))
    """Assistant and user simulator calls (tau2's ``llm_args``); a role's own ``agents.<role>.sampling`` wins."""

    def check(self) -> None:
        """At least one trial per task."""
        at_least("num_trials", self.num_trials, 1)


class ToolProtocol(Enum):
    """How a role's tools reach its model: as OpenAI tool schemas (``native``), or described in the system prompt
    with calls read back from ``<tool_call>`` tags in the text (``prompt``, for backends without tool calling such
    as ``local``). ``auto`` picks ``prompt`` for the ``local`` backend, ``native`` for every other."""

    auto = "auto"
    native = "native"
    prompt = "prompt"


@dataclass
class ChatAgentConfig(AgentConfig):
    """``agents.assistant.*`` and ``agents.user.*``."""

    sampling: Sampling | None = None
    """Overrides ``tau2.sampling`` for this role."""
    tools: ToolProtocol = ToolProtocol.auto


@dataclass
class ToolExecutorConfig(AgentConfig):
    """``agents.tool.*``: the actors that hold each task's environment (routing ``sticky`` keeps a task on one)."""

    max_environments: int = 64
    """Environments one actor keeps; beyond it the least recently used is dropped (and rebuilt if used again)."""


@dataclass
class RewardConfig(AgentConfig):
    """``agents.reward.*``."""

    gold_cache_size: int = 4096
    """Tasks whose gold-side evaluation (the expected database) one actor remembers across trials."""
