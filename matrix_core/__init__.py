"""Matrix: peer-to-peer multi-agent synthetic data generation on Ray, extended by plugins.

The public API: what plugins and scripts import, all from here (``from matrix_core import hookimpl, Orchestrator``).
Modules below ``matrix_core`` are internal and may change in any release; ``matrix_core.testing`` holds the helpers
for plugin authors' tests. Names load on first use, so that ``import matrix_core`` stays cheap (no Ray, no HTTP
client) for the ``matrix`` command line.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

# A Ray that this process starts binds 127.0.0.1 only, unless the user set this variable themselves. Ray reads it
# once, when ray is first imported, and the engine, backends and plugins import ray at module level: this package's
# own import is the one step that comes before all of them, in every Matrix process (the `matrix` script,
# `python -m matrix_core`, a library caller, Ray's workers loading Matrix's classes, the pytest plugin). Ray's
# workers and agents inherit it. Nodes of a cluster set "1" for themselves (matrix_core/cluster/node.py).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from matrix_core.errors import BadRowError, ConfigError, MatrixError, OutputError, UsageError, first_line
from matrix_core.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from matrix_core.agent import Agent, AgentContext
    from matrix_core.api import resolve_config, run
    from matrix_core.backends.base import Backend, BackendError, ChatResponse, ContentFilterError, Sampling, Usage
    from matrix_core.backends.openai import OpenAIBackend, OpenAIConfig
    from matrix_core.config import AgentConfig, BackendConfig, ConfigProblem, Origin, ResolvedConfig, at_least
    from matrix_core.metrics import CapReport, EngineCounters, RunMetrics
    from matrix_core.orchestrator import DONE, Orchestrator, Turn
    from matrix_core.sinks.base import FinishedRecord, Sink, companion
    from matrix_core.sinks.jsonl import JsonlSink

try:
    __version__ = version("matrix-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

_LAZY = {
    # workflows: the task message and the agents that step it
    "Orchestrator": "matrix_core.orchestrator",
    "DONE": "matrix_core.orchestrator",
    "Turn": "matrix_core.orchestrator",
    "Agent": "matrix_core.agent",
    "AgentContext": "matrix_core.agent",
    # configuration schemas plugins extend, and where a value came from
    "AgentConfig": "matrix_core.config",
    "BackendConfig": "matrix_core.config",
    "Origin": "matrix_core.config",
    "ConfigProblem": "matrix_core.config",
    "at_least": "matrix_core.config",
    "ResolvedConfig": "matrix_core.config",
    # LLM backends
    "Backend": "matrix_core.backends.base",
    "BackendError": "matrix_core.backends.base",
    "ChatResponse": "matrix_core.backends.base",
    "ContentFilterError": "matrix_core.backends.base",
    "Sampling": "matrix_core.backends.base",
    "Usage": "matrix_core.backends.base",
    "OpenAIBackend": "matrix_core.backends.openai",
    "OpenAIConfig": "matrix_core.backends.openai",
    # output
    "Sink": "matrix_core.sinks.base",
    "FinishedRecord": "matrix_core.sinks.base",
    "companion": "matrix_core.sinks.base",
    "JsonlSink": "matrix_core.sinks.jsonl",
    # a workflow's own sections of `matrix report`
    "ReportSection": "matrix_core.report.sections",
    "Text": "matrix_core.report.sections",
    "Table": "matrix_core.report.sections",
    "Bars": "matrix_core.report.sections",
    "Histogram": "matrix_core.report.sections",
    "Lines": "matrix_core.report.sections",
    "Conversation": "matrix_core.report.sections",
    # running from Python, and what a run reports
    "run": "matrix_core.api",
    "resolve_config": "matrix_core.api",
    "RunMetrics": "matrix_core.metrics",
    "EngineCounters": "matrix_core.metrics",
    "CapReport": "matrix_core.metrics",
}

__all__ = [  # every public name, the lazy ones included
    "DONE",
    "Agent",
    "AgentConfig",
    "AgentContext",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BadRowError",
    "Bars",
    "CapReport",
    "ChatResponse",
    "ConfigError",
    "ConfigProblem",
    "ContentFilterError",
    "Conversation",
    "EngineCounters",
    "FinishedRecord",
    "Histogram",
    "JsonlSink",
    "Lines",
    "MatrixError",
    "OpenAIBackend",
    "OpenAIConfig",
    "Orchestrator",
    "Origin",
    "OutputError",
    "Register",
    "ReportSection",
    "ResolvedConfig",
    "RunMetrics",
    "Sampling",
    "Sink",
    "Table",
    "Text",
    "Turn",
    "Usage",
    "UsageError",
    "__version__",
    "at_least",
    "companion",
    "first_line",
    "hookimpl",
    "resolve_config",
    "run",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'matrix_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
