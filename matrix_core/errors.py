"""User-facing errors: one line each; the CLI prints ``Error: <message>`` and exits with ``exit_code``."""

from __future__ import annotations


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's message (an exception's type's name when the message is empty, ``""``
    for an empty string): what a one-line error quotes of a library's multi-line one."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0].strip()


class MatrixError(Exception):
    """A mistake the user can fix (bad config, unknown name, malformed input); never a bug."""

    exit_code = 1
    retryable = False
    """Whether trying the same step again may succeed (a failing server) or not (bad input)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(MatrixError):
    """A wrong name or argument on the command line or in config."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value that is unknown, mistyped or out of range."""


class BadRowError(MatrixError):
    """An input row the workflow cannot use (a missing or mistyped field), named by file and line: the run stops, or
    with ``input.skip_bad_rows`` the row is noted in ``<stem>.rejected.jsonl`` and the run goes on. Raise it from
    :meth:`~matrix_core.Orchestrator.expand_row` or :meth:`~matrix_core.Orchestrator.from_row`."""


class PluginError(MatrixError):
    """A plugin that failed to load or register (fatal only with ``MATRIX_STRICT_PLUGINS=1``)."""


class OutputError(MatrixError):
    """The output cannot be written (a missing directory, a full disk, another run holding it): the run stops, and
    what was written stays for ``--resume``."""

    def __reduce__(self) -> tuple[type[OutputError], tuple[str, str | None]]:
        return type(self), (str(self), self.hint)  # the hint survives the trip from the writer actor
