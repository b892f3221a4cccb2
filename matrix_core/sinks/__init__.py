"""Output writers."""

from matrix_core.sinks.base import Sink

__all__ = ["Sink"]
