"""Matrix: peer-to-peer multi-agent synthetic data generation on Ray, extended by plugins.

Plugins import the hook marker from here: ``from matrix_core import hookimpl``.
"""

from importlib.metadata import PackageNotFoundError, version

from matrix_core.errors import MatrixError
from matrix_core.hookspecs import hookimpl

try:
    __version__ = version("matrix-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["MatrixError", "__version__", "hookimpl"]
