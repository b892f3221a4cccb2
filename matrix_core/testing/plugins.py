"""Registering plugins in-process for a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from matrix_core import plugins


def installed_plugins() -> plugins.Plugins:
    """The installed plugins (and those registered in-process), loaded once per process: their ``infos`` (what
    ``matrix plugins list`` shows) and their ``registry`` of components by kind and name."""
    return plugins.load_plugins()


@contextmanager
def register_plugin(plugin: object, name: str | None = None) -> Iterator[plugins.Plugins]:
    """Load ``plugin`` (a module or object with ``@hookimpl`` functions) after the installed ones.

    Yields the freshly loaded :class:`~matrix_core.plugins.Plugins`; on exit the plugin is removed and the next
    :func:`~matrix_core.plugins.load_plugins` loads without it::

        with register_plugin(my_plugin_module) as loaded:
            assert "my-workflow" in loaded.registry.names("orchestrators")
    """
    entry = (name or getattr(plugin, "__name__", type(plugin).__name__), plugin)
    plugins._in_process.append(entry)
    plugins.load_plugins.cache_clear()
    try:
        yield plugins.load_plugins()
    finally:
        plugins._in_process.remove(entry)
        plugins.load_plugins.cache_clear()
