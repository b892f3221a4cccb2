"""``nr.*`` and each role's ``agents.<role>.*``: typed, so that omegaconf rejects unknown keys and values.

The sampling defaults are the ones fair-matrix's NaturalReasoning curation ran with
(``matrix/agents/config/resources/nr_resources.yaml``); the shipped ``naturalreasoning.yaml`` shortens the two long
stages for a laptop demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from matrix_core import AgentConfig, ConfigProblem, Sampling


class Keep(Enum):
    """Which documents go to the output; the others are only marked finished for ``--resume``."""

    success = "success"
    all = "all"


@dataclass
class NRConfig:
    """``nr.*``: the workflow's own options."""

    min_en: float = 0.8
    """The English gate: a document whose English probability is below this is ``filtered:en``."""
    keep: Keep = Keep.success

    def check(self) -> None:
        """``min_en`` is a probability."""
        if not 0.0 <= self.min_en <= 1.0:
            raise ConfigProblem("min_en", f"must be from 0 to 1, got {self.min_en}")


@dataclass
class FilterConfig(AgentConfig):
    """``agents.filter.*``: the language gate and the small "advanced reasoning" classifier."""

    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=1.0, top_p=0.95, max_tokens=8))


@dataclass
class ScoreConfig(AgentConfig):
    """``agents.score.*``: the four-criteria rubric."""

    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.2, top_p=0.9, max_tokens=10240))


@dataclass
class QuestionConfig(AgentConfig):
    """``agents.question.*``: the exam question with its reference and independent answers."""

    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.0, top_p=0.9, max_tokens=20480))
