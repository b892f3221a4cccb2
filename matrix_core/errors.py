"""User-facing errors: one line each; the CLI prints ``Error: <message>`` and exits with ``exit_code``."""

from __future__ import annotations


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


class PluginError(MatrixError):
    """A plugin that failed to load or register (fatal only with ``MATRIX_STRICT_PLUGINS=1``)."""
