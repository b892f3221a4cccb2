"""Helpers for testing Matrix plugins: register a plugin in-process, serve a fake OpenAI-compatible API, start a
private local Ray."""

from matrix_core.testing.configs import typed_config
from matrix_core.testing.plugins import installed_plugins, register_plugin
from matrix_core.testing.ray import local_ray
from matrix_core.testing.server import FakeOpenAIServer, RecordedRequest

__all__ = [
    "FakeOpenAIServer",
    "RecordedRequest",
    "installed_plugins",
    "local_ray",
    "register_plugin",
    "typed_config",
]
