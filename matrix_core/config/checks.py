"""What a config section's ``check()`` raises, and how the resolver turns that into a one-line error.

omegaconf rejects unknown keys and wrong types. Anything else about one section's values (a count below 1, a range
the wrong way round) is the schema's own ``check(self) -> None`` method, which raises :class:`ConfigProblem` naming
the key inside the section. :func:`matrix_core.config.resolve` calls it once per typed section and words the problem
``"<file:line or override>: <dotted.key>: <message>"``; :func:`check_section` does the same for code that builds a
section on its own (a backend made outside a run).
"""

from __future__ import annotations

from collections.abc import Callable

from matrix_core import redaction
from matrix_core.errors import ConfigError, first_line


class ConfigProblem(Exception):
    """One value of a config section that the section's ``check()`` refuses.

    ``key`` is relative to the section (``replicas``; ``port_min..port_max`` for two keys that go together), and
    ``message`` says what is wrong without repeating the key (``must be at least 1, got 0``)."""

    def __init__(self, key: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
        self.hint = hint


def at_least(key: str, value: float | None, minimum: float) -> None:
    """Refuse ``value`` below ``minimum`` (``None``, unset, passes): ``must be at least <minimum>, got <value>``."""
    if value is not None and value < minimum:
        raise ConfigProblem(key, f"must be at least {minimum}, got {value}")


def check_section(section: object, prefix: str, where: Callable[[str], str] | None = None) -> None:
    """Run ``section.check()`` when its schema defines one; a :class:`ConfigProblem` becomes a :class:`ConfigError`
    ``"<where(key)>: <prefix>.<key>: <message>"`` (without ``where``: ``"<prefix>.<key>: <message>"``)."""
    check = getattr(section, "check", None)
    if not callable(check):
        return
    try:
        check()
    except ConfigProblem as problem:
        key = f"{prefix}.{problem.key}"
        place = f"{where(key)}: " if where is not None else ""
        raise ConfigError(f"{place}{key}: {problem.message}", hint=problem.hint) from None


def value_problem(key: str, value: str, error: Exception) -> str:
    """What omegaconf found wrong with ``key``'s value, without the value: none of it for a secret's key."""
    if any(redaction.is_secret_key(part) for part in key.split(".")):
        return "invalid value (not shown: a secret)"
    return first_line(error).replace(value, redaction.REDACTED) if value else first_line(error)
