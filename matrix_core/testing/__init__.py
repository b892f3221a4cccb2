"""Helpers for testing Matrix plugins: register a plugin in-process, without installing it."""

from matrix_core.testing.plugins import register_plugin

__all__ = ["register_plugin"]
