"""The simulated GPU's script for Collaborative Reasoner conversations, so that two implementations of Coral (ours
and fair-matrix's) hold the same conversations against it.

Each question gets a number of turns ``T`` (from a hash of its text: 2 + an exponential of mean 3, at most 20).
Teacher and student turns are ``output_tokens`` of filler ending in ``My answer: (X)``: (B) and (C) in turn, so the
two disagree, until turn ``T - 2``, from which both say (A), the gold answer: the matcher sees agreement after
exactly ``T`` turns in either implementation (both read each side's latest answer). An extractor request (a small
``max_tokens``) gets back the answer of the turn it was shown.

Both implementations open with the same student message (``I'm trying to solve this problem: "..."``, the original
Collaborative Reasoner's), which is where the question is read from.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

MAX_TURNS = 20
EXTRACTOR_MAX_TOKENS = 64
_QUESTION = re.compile(r'I\'m trying to solve this problem: "(.*?)"\nAnd the choices', re.DOTALL)
_ANSWER = re.compile(r"My answer: \(([A-Z])\)")


def turns_for(question: str) -> int:
    """How many turns the conversation about ``question`` lasts."""
    seed = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest())
    return min(MAX_TURNS, 2 + int(random.Random(seed).expovariate(1 / 3)))


def reply(body: dict[str, Any], output_tokens: int) -> str:
    """The content of the answer to one chat request (see the module's docstring)."""
    messages = body["messages"]
    texts = [str(message.get("content") or "") for message in messages]
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if 0 < limit <= EXTRACTOR_MAX_TOKENS:
        found = _ANSWER.findall(texts[-1])
        return f"The answer is ({found[-1]})." if found else "not sure yet"
    question = next((match.group(1) for text in texts if (match := _QUESTION.search(text))), "")
    spoken = sum(len(_ANSWER.findall(text)) for text in texts)  # turns already spoken, each ends with its answer
    answer = "A" if spoken >= turns_for(question) - 2 else "BC"[spoken % 2]
    return " ".join(["tok"] * max(0, output_tokens - 4) + [f"My answer: ({answer})"])
