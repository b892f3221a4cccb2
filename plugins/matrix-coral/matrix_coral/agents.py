"""The agents of the ``coral`` workflow: the collaborator that plays teacher or student, and the answer extractor."""

from __future__ import annotations

import asyncio

from matrix_coral.config import CoralConfig
from matrix_coral.extraction import extract_answer
from matrix_coral.grading import is_correct
from matrix_coral.prompts import EXTRACTOR_SYSTEM_PROMPT, chat_messages, extraction_prompt
from matrix_coral.workflow import CoralOrchestrator, Extraction
from matrix_core import Agent


class Collaborator(Agent):
    """Takes the next turn as its role (teacher or student), seeing its own turns as ``assistant``."""

    async def step(self, task: CoralOrchestrator) -> CoralOrchestrator:
        config: CoralConfig = self.context.workflow_config
        role = self.context.role
        messages = chat_messages(task.system_prompt, [(turn.role, turn.text or "") for turn in task.history], role)
        response = await self.context.backend.chat(messages, config.sampling, task_id=task.id)
        task.add_turn(role, response.text or "", response.usage.prompt_tokens, response.usage.completion_tokens)
        return task


class Extractor(Agent):
    """Asks the backend which answer the latest turn commits to, normalises and grades it."""

    async def step(self, task: CoralOrchestrator) -> CoralOrchestrator:
        config: CoralConfig = self.context.workflow_config
        messages = [
            {"role": "system", "content": EXTRACTOR_SYSTEM_PROMPT},
            {"role": "user", "content": extraction_prompt(task.question, task.history[-1].text or "")},
        ]
        response = await self.context.backend.chat(messages, config.extractor_sampling, task_id=task.id)
        reply = response.text or ""
        answer = extract_answer(task.question.format, reply)
        correct = answer is not None and await asyncio.to_thread(is_correct, task.question, answer)
        usage = response.usage
        task.record_extraction(Extraction(reply, answer, correct, usage.prompt_tokens, usage.completion_tokens))
        return task
