"""A Coral-like workload: a teacher and a student take turns on a question, each turn one LLM call that sees the
whole conversation, until the row's number of turns (at most 20, drawn per question) has been spoken.

The same conversations, with exactly the same requests, are driven by the engine (this module's ``duet`` workflow,
a plugin like any other) and by the baselines in :mod:`baselines`, so only the orchestration differs. Ending after
a number of turns fixed per question stands in for "until the two agree": it makes every implementation do the
same work, which an agreement read from simulated text would not guarantee.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from matrix_core import hookimpl
from matrix_core.agent import Agent
from matrix_core.backends import Sampling
from matrix_core.orchestrator import DONE, Orchestrator

SYSTEM_PROMPT = "You are working with a partner on a reasoning question. Be direct; give your answer as (X)."
MAX_TURNS = 20
SIDES = ("teacher", "student")


def conversations(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` rows: a question and its number of turns, 2 + an exponential of mean 3, at most :data:`MAX_TURNS`
    (most conversations end within a few turns, a long tail runs to the cap, as in Collaborative Reasoner)."""
    draw = random.Random(seed)
    return [
        {
            "id": str(i),
            "question": f"Question {i}: which option is right?",
            "turns": min(MAX_TURNS, 2 + int(draw.expovariate(1 / 3))),
        }
        for i in range(count)
    ]


def messages(question: str, turns: list[str], speaker: str) -> list[dict[str, str]]:
    """What ``speaker`` sees: the system prompt, the question (from the student), then the turns so far, its own as
    ``assistant``. Turn ``i`` is spoken by ``SIDES[i % 2]``."""
    chat = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    for index, text in enumerate(turns):
        chat.append({"role": "assistant" if SIDES[index % 2] == speaker else "user", "content": text})
    return chat


def speaker(turns_so_far: int) -> str:
    """Who speaks the next turn."""
    return SIDES[turns_so_far % 2]


@dataclass
class DuetConfig:
    """``duet.*``."""

    max_tokens: int = 1024


@dataclass
class DuetOrchestrator(Orchestrator):
    """One conversation: the row's question, spoken about for the row's number of turns (``history`` holds them)."""

    roles = {"teacher": "duet.agent", "student": "duet.agent"}
    config_key = "duet"
    config_schema = DuetConfig

    wanted: int = 2
    max_tokens: int = 1024

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: DuetConfig) -> DuetOrchestrator:
        return cls(id=id, row=row, wanted=int(row["turns"]), max_tokens=config.max_tokens)

    def next_role(self) -> str | None:
        return speaker(len(self.history)) if self.status is None else DONE


class DuetAgent(Agent):
    """Speaks the next turn."""

    async def step(self, task: DuetOrchestrator) -> DuetOrchestrator:
        chat = messages(task.row["question"], [turn.text or "" for turn in task.history], self.context.role)
        response = await self.context.backend.chat(chat, Sampling(max_tokens=task.max_tokens), task_id=task.id)
        usage = response.usage
        task.add_turn(self.context.role, response.text or "", usage.prompt_tokens, usage.completion_tokens)
        if len(task.history) >= task.wanted:
            task.finish("success")
        return task


@hookimpl
def matrix_register_orchestrators(register):
    register("duet", DuetOrchestrator)


@hookimpl
def matrix_register_agents(register):
    register("duet.agent", DuetAgent)
