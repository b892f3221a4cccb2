"""``coral.*``: the workflow's options, typed so that omegaconf rejects unknown keys and values."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from matrix_core import Sampling, at_least


class DatasetFormat(Enum):
    """The input row layouts Collaborative Reasoner reads; ``auto`` detects each row's from its fields."""

    auto = "auto"
    mmlu_pro = "mmlu_pro"
    math = "math"
    gpqa = "gpqa"
    tom = "tom"


class AgreementRule(Enum):
    """When teacher and student agree (see :mod:`matrix_coral.agreement`)."""

    strict = "strict"
    latest_valid = "latest_valid"


class KeepRule(Enum):
    """Which finished conversations go to the output (the others are only marked finished for ``--resume``)."""

    all = "all"
    agreement_correct = "agreement_correct"


class Export(Enum):
    """The shape of each output record: the whole conversation, or chat-format training examples."""

    conversation = "conversation"
    sft = "sft"


@dataclass
class DatasetConfig:
    """``coral.dataset.*``."""

    format: DatasetFormat = DatasetFormat.auto


@dataclass
class CoralConfig:
    """``coral.*``. The defaults are the paper's; the shipped ``coral.yaml`` shortens them for a laptop demo."""

    max_turns: int = 20
    """Generated turns at most (the injected question not counted)."""
    agreement_rule: AgreementRule = AgreementRule.strict
    keep: KeepRule = KeepRule.all
    export: Export = Export.conversation
    system_prompt: str | None = None
    """Replaces the collaborative system prompt of teacher and student (``--system-prompt``)."""
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.2, top_p=0.9, max_tokens=1024))
    """Teacher and student turns."""
    extractor_sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.0, max_tokens=32))
    dataset: DatasetConfig = field(default_factory=DatasetConfig)

    def check(self) -> None:
        """At least one generated turn."""
        at_least("max_turns", self.max_turns, 1)
