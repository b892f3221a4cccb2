"""LLM backends: the interface and the built-in implementations."""

from matrix_core.backends.base import Backend, BackendError, ChatResponse, Sampling, Usage

__all__ = ["Backend", "BackendError", "ChatResponse", "Sampling", "Usage"]
