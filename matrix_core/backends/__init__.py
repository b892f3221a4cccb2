"""LLM backends: the interface and the built-in implementations."""

from matrix_core.backends.base import Backend, BackendError, ChatResponse, ContentFilterError, Sampling, Usage

__all__ = ["Backend", "BackendError", "ChatResponse", "ContentFilterError", "Sampling", "Usage"]
