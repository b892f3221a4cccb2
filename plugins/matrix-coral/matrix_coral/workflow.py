"""The ``coral`` workflow: a teacher and a student discuss a question until they agree (Collaborative Reasoner).

Turn 0 is the student's question. Then teacher and student alternate; after each of their turns the extractor
reads the answer the turn commits to, and the task checks agreement before routing on:
teacher -> extractor -> student -> extractor -> ... The check needs no LLM, so it runs in the extractor's step
rather than as a matcher role of its own, saving a hop (and a copy of the history) per turn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from matrix_coral.agreement import agreed_answer
from matrix_coral.config import AgreementRule, CoralConfig, Export, KeepRule
from matrix_coral.prompts import chat_messages, opening_message, system_prompt
from matrix_coral.questions import Question, parse_question
from matrix_coral.report import report_sections
from matrix_core import DONE, BadRowError, Orchestrator, Turn

if TYPE_CHECKING:
    from matrix_core import ReportSection, RunMetrics

CATEGORY_KEYS = ("category", "subject")
"""Row fields that name a question's category (MMLU-Pro's, MMLU's own layout's); the record carries it."""


@dataclass
class Extraction:
    """What the answer extractor made of one generated turn."""

    reply: str
    """The extractor's own words."""
    answer: str | None
    """The normalised answer the turn commits to; None when it commits to none ("not sure yet", no answer)."""
    correct: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(kw_only=True)
class CoralOrchestrator(Orchestrator):
    """One question's conversation: its turns, what each commits to, and whether and on what the two agreed."""

    roles = {"teacher": "coral.collaborator", "student": "coral.collaborator", "extractor": "coral.extractor"}
    config_key = "coral"
    config_schema = CoralConfig
    default_config = "matrix_coral:coral.yaml"
    profiles = {"demo": "matrix_coral:demo.yaml"}
    default_input = "matrix_coral:data/mmlu_sample.jsonl"

    question: Question
    system_prompt: str
    max_turns: int = 20
    agreement_rule: AgreementRule = AgreementRule.strict
    keep_rule: KeepRule = KeepRule.all
    export: Export = Export.conversation
    extractions: list[Extraction] = field(default_factory=list)
    """One per generated turn once the extractor has read it: ``extractions[i]`` is about ``history[i + 1]``."""
    agreed: str | None = None
    """The answer both sides agreed on; None without agreement."""

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: CoralConfig) -> CoralOrchestrator:
        """The conversation's start: the student's question (turn 0), the teacher to answer it; a row that holds no
        question in a known format is a :class:`BadRowError`."""
        try:
            question = parse_question(row, config.dataset.format)
        except BadRowError as error:
            raise BadRowError(f"row {id!r}: {error}", hint=error.hint) from None
        task = cls(
            id=id,
            row=row,
            question=question,
            system_prompt=config.system_prompt or system_prompt(question.format),
            max_turns=config.max_turns,
            agreement_rule=config.agreement_rule,
            keep_rule=config.keep,
            export=config.export,
        )
        task.add_turn("student", opening_message(question))
        return task

    @property
    def turns(self) -> list[Turn]:
        """The generated turns: the history without the injected question."""
        return self.history[1:]

    def next_role(self) -> str | None:
        if self.status is not None:
            return DONE
        if len(self.extractions) < len(self.turns):
            return "extractor"
        return "student" if self.history[-1].role == "teacher" else "teacher"

    def record_extraction(self, extraction: Extraction) -> None:
        """Attach ``extraction`` to the latest turn; end the conversation at agreement or after ``max_turns``."""
        self.extractions.append(extraction)
        self.count_tokens(extraction.prompt_tokens, extraction.completion_tokens)
        answers = [(self.history[0].role, None)]  # the injected question commits to no answer
        answers += [(turn.role, found.answer) for turn, found in zip(self.turns, self.extractions, strict=True)]
        self.agreed = agreed_answer(answers, self.agreement_rule)
        if self.agreed is not None:
            self.finish("success", "agreement")
        elif len(self.turns) >= self.max_turns:
            self.finish("max_turns", f"no agreement in {self.max_turns} turns")

    @property
    def agreement_correct(self) -> bool:
        """Whether the two agreed, on the gold answer."""
        if self.agreed is None:
            return False
        return next(found.correct for found in reversed(self.extractions) if found.answer == self.agreed)

    def keep(self) -> bool:
        return self.keep_rule is KeepRule.all or self.agreement_correct

    def metrics(self) -> dict[str, float]:
        """Collaborative Reasoner's conversation metrics; the run's metrics file holds their means."""
        teacher = [turn.completion_tokens for turn in self.turns if turn.role == "teacher"]
        student = [turn.completion_tokens for turn in self.turns if turn.role == "student"]
        valid = [found.answer is not None for found in self.extractions]
        return {
            "agreement": float(self.agreed is not None),
            "agreement_correctness": float(self.agreement_correct),
            "final_success_rate": float(any(found.correct for found in self.extractions)),
            "valid_answer_rate": sum(valid) / len(valid) if valid else 0.0,
            "conv_err": float(self.status == "error"),
            "n_turns": float(len(self.turns)),
            "teacher_tokens": sum(teacher) / len(teacher) if teacher else 0.0,
            "student_tokens": sum(student) / len(student) if student else 0.0,
            "conversation_tokens": float(sum(teacher) + sum(student)),
        }

    def to_record(self) -> dict[str, Any]:
        if self.export is Export.sft:
            return {**super().to_record(), "examples": self.sft_examples()}
        turns = []
        for index, turn in enumerate(self.turns):
            found = self.extractions[index] if index < len(self.extractions) else None
            turns.append(
                {
                    "role": turn.role,
                    "text": turn.text,
                    "answer": found.answer if found else None,
                    "valid": found is not None and found.answer is not None,
                    "correct": found is not None and found.correct,
                    "extractor_reply": found.reply if found else None,
                    "usage": {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens},
                }
            )
        return {
            **super().to_record(),
            "format": self.question.format.value,
            "question": self.question.text,
            "gold": self.question.gold,
            "category": next((str(self.row[key]) for key in CATEGORY_KEYS if self.row.get(key) is not None), None),
            "prompt": self.history[0].text,
            "turns": turns,
            "agreement": self.agreed is not None,
            "agreed_answer": self.agreed,
            "agreement_correctness": self.agreement_correct,
            "n_turns": len(self.turns),
        }

    @classmethod
    def report(cls, records: Iterable[dict[str, Any]], metrics: RunMetrics) -> list[ReportSection]:
        """Agreement and agreement on the gold answer, turns to agreement, results per category and example
        conversations (:mod:`matrix_coral.report`)."""
        return report_sections(records, metrics)

    def sft_examples(self) -> list[dict[str, list[dict[str, str]]]]:
        """One chat-format training example per generated turn, as the original's fine-tuning data: the speaker's
        view of the conversation so far (system prompt included) as ``prompt``, the turn as ``completion``."""
        history = [(turn.role, turn.text or "") for turn in self.history]
        return [
            {
                "prompt": chat_messages(self.system_prompt, history[:index], speaker=role),
                "completion": [{"role": "assistant", "content": text}],
            }
            for index, (role, text) in enumerate(history)
            if index > 0
        ]
