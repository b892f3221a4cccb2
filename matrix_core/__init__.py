"""Matrix: peer-to-peer multi-agent synthetic data generation on Ray, extended by plugins.

Plugins import the hook marker from here: ``from matrix_core import hookimpl``.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# A Ray that this process starts binds 127.0.0.1 only, unless the user set this variable themselves. Ray reads it
# once, when ray is first imported, and the engine, backends and plugins import ray at module level: this package's
# own import is the one step that comes before all of them, in every Matrix process (the `matrix` script,
# `python -m matrix_core`, a library caller, Ray's workers loading Matrix's classes, the pytest plugin). Ray's
# workers and agents inherit it. Nodes of a cluster set "1" for themselves (matrix_core/cluster/node.py).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from matrix_core.errors import MatrixError
from matrix_core.hookspecs import hookimpl

try:
    __version__ = version("matrix-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["MatrixError", "__version__", "hookimpl"]
