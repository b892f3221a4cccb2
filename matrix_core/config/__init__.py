"""Run configuration: workflow defaults < profile < ``-c`` files (in order) < flags < ``KEY=VALUE`` overrides, typed
by dataclasses and checked once, when resolved.

- :mod:`~matrix_core.config.schemas`: the core's sections (``backend``, ``agents.<role>``, ``run``, ``input``,
  ``output``);
- :mod:`~matrix_core.config.sources`: the layers, with the file and line of each key;
- :mod:`~matrix_core.config.resolve`: merging, profiles, origins, role backends;
- :mod:`~matrix_core.config.checks`: a section's ``check()`` and its :class:`ConfigProblem`;
- :mod:`~matrix_core.config.resolvers`: ``${matrix.cores:}``.
"""

from matrix_core.config.checks import ConfigProblem, at_least, check_section
from matrix_core.config.resolve import (
    DEFAULT,
    REFERENCE,
    Origin,
    ProfileChange,
    ResolvedConfig,
    is_secret,
    redact,
    resolve,
    resolve_backend,
)
from matrix_core.config.resolvers import register as _register_resolvers
from matrix_core.config.schemas import (
    AgentConfig,
    BackendConfig,
    HubConfig,
    InputConfig,
    OutputConfig,
    Routing,
    RunConfig,
)
from matrix_core.config.sources import (
    ConfigSource,
    load_file,
    load_resource,
    parse_overrides,
    source_from,
    sources_for,
)
from matrix_core.redaction import REDACTED

__all__ = [
    "DEFAULT",
    "REDACTED",
    "REFERENCE",
    "AgentConfig",
    "BackendConfig",
    "ConfigProblem",
    "ConfigSource",
    "HubConfig",
    "InputConfig",
    "Origin",
    "OutputConfig",
    "ProfileChange",
    "ResolvedConfig",
    "Routing",
    "RunConfig",
    "at_least",
    "check_section",
    "is_secret",
    "load_file",
    "load_resource",
    "parse_overrides",
    "redact",
    "resolve",
    "resolve_backend",
    "source_from",
    "sources_for",
]

_register_resolvers()
