"""LLM backends: the interface and the built-in implementations."""

from matrix_core.backends.base import Backend, ChatResponse, Sampling, Usage

__all__ = ["Backend", "ChatResponse", "Sampling", "Usage"]
