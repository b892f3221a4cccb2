"""The three system prompts of NaturalReasoning's curation, word for word: they are the method.

Source: fair-matrix 0.2.6, ``matrix/agents/config/agents/nr_agents.yaml`` (the ``system_prompt`` of ``filter``,
``score`` and ``question``), kept in ``prompt_files/*.md`` exactly as that YAML yields them (including the score
prompt's unclosed example fence). Each is sent as the system message, the document's text as the user message.
"""

from __future__ import annotations

from importlib import resources

_PROMPTS = resources.files(__package__).joinpath("prompt_files")

FILTER_PROMPT = _PROMPTS.joinpath("filter.md").read_text(encoding="utf-8")
"""Asks whether the text shows advanced reasoning on four criteria; answer Yes or No."""
SCORE_PROMPT = _PROMPTS.joinpath("score.md").read_text(encoding="utf-8")
"""The additive four-criteria rubric, ending in one fenced JSON block of ``criteria_1`` .. ``criteria_4``."""
QUESTION_PROMPT = _PROMPTS.joinpath("question.md").read_text(encoding="utf-8")
"""Extract an exam question, its category, the text's answer and an independent step-by-step answer, as JSON."""


def chat(system_prompt: str, text: str) -> list[dict[str, str]]:
    """The messages of one stage: its prompt as the system message, the document as the user message."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": text}]
