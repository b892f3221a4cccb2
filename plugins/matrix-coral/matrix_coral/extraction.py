"""Normalising the answer extractor's reply into the answer a turn commits to, or None.

After Collaborative Reasoner's extraction evaluators: a reply that says "not sure yet" anywhere commits to nothing;
a multiple-choice reply commits to its first ``(X)``; a MATH reply to its first ``\\boxed{...}``; a theory-of-mind
reply to its first line, without a ``Short Answer:`` / ``The final answer is`` prefix, lower-cased.
"""

from __future__ import annotations

import re

from matrix_coral.config import DatasetFormat

NOT_SURE = "not sure yet"
_OPTION = re.compile(r"\(([A-Z])\)")
_BOXED = re.compile(r"\\boxed\s*\{")
_TOM_PREFIX = re.compile(r"^(?:short answer:\s*)?(?:the final answer is\s*)?", re.IGNORECASE)
_ARTICLE = re.compile(r"\bthe\b")


def extract_answer(format: DatasetFormat, reply: str) -> str | None:
    """The answer ``reply`` (the extractor's output) commits to in ``format``, or None for no valid answer."""
    if NOT_SURE in reply.lower():
        return None
    if format is DatasetFormat.math:
        boxed = boxed_contents(reply)
        return boxed[0] if boxed else None
    if format is DatasetFormat.tom:
        return normalise_short_answer(_TOM_PREFIX.sub("", reply.strip().split("\n", 1)[0])) or None
    match = _OPTION.search(reply)
    return match.group(1) if match else None


def normalise_short_answer(text: str) -> str:
    """A theory-of-mind answer as compared: lower-case, no "the", no final period, ``_`` as a space (Hi-ToM)."""
    text = _ARTICLE.sub(" ", text.lower().replace("_", " "))
    return " ".join(text.split()).rstrip(".").strip()


def boxed_contents(text: str) -> list[str]:
    """The non-empty contents of every ``\\boxed{...}`` in ``text``, braces balanced, in order."""
    found = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                if content := text[start:end].strip():
                    found.append(content)
                break
    return found
