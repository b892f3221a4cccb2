"""Output writers."""

from matrix_core.sinks.base import FinishedRecord, Sink, replace_atomically

__all__ = ["FinishedRecord", "Sink", "replace_atomically"]
