"""Helpers for testing Matrix plugins: register a plugin in-process, serve a fake OpenAI-compatible API."""

from matrix_core.testing.plugins import register_plugin
from matrix_core.testing.server import FakeOpenAIServer, RecordedRequest

__all__ = ["FakeOpenAIServer", "RecordedRequest", "register_plugin"]
