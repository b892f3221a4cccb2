"""When teacher and student agree, by either rule.

- ``strict`` (Collaborative Reasoner): the last teacher turn and the last student turn both commit to a valid
  answer, the same one. A turn that commits to nothing ("not sure yet") breaks agreement.
- ``latest_valid`` (fair-matrix's matcher): each side's latest *valid* answer, skipping turns that commit to
  nothing, and the two are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from matrix_coral.config import AgreementRule

SIDES = ("teacher", "student")


def agreed_answer(answers: Sequence[tuple[str, str | None]], rule: AgreementRule) -> str | None:
    """The answer both sides agree on, or None. ``answers`` holds each turn's ``(role, answer)``, oldest first,
    with None for a turn that commits to no valid answer (the injected question included)."""
    latest: dict[str, str | None] = {}
    for role, answer in reversed(answers):
        if role in latest or (answer is None and rule is AgreementRule.latest_valid):
            continue
        latest[role] = answer
        if len(latest) == len(SIDES):
            break
    teacher, student = (latest.get(side) for side in SIDES)
    return teacher if teacher is not None and teacher == student else None
