"""Resolution: workflow defaults < profile < ``-c`` files (in order) < flags < ``KEY=VALUE`` overrides, merged into
one schema built from the core's sections and the ones the workflow, agents and backends declare, then each typed
section checked once. Each layer is merged on its own so that an error names the file and line (or the override)
it came from."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from matrix_core import redaction
from matrix_core.config.checks import check_section, value_problem
from matrix_core.config.schemas import BackendConfig, InputConfig, OutputConfig, RunConfig
from matrix_core.config.sources import ConfigSource, load_resource, resource_path
from matrix_core.errors import ConfigError, MatrixError, UsageError, first_line

if TYPE_CHECKING:
    from matrix_core.registry import Component, Registry

REFERENCE = "reference"
"""The profile name that asks for the workflow's defaults, its reference settings, whatever the backend."""


@dataclass(frozen=True)
class Origin:
    """Where a value in force came from: its ``kind`` (``default``, ``profile``, ``file``, ``flag``, ``override``)
    and the place (``my.yaml:3``, ``override #2``, ``profile demo``)."""

    kind: str
    where: str

    def __str__(self) -> str:
        return self.where if self.where.startswith(self.kind) else f"{self.kind} {self.where}"


DEFAULT = Origin("default", "default")


@dataclass(frozen=True)
class ProfileChange:
    """A value a profile put in force instead of the workflow's reference value."""

    key: str
    value: Any
    reference: Any


@dataclass(frozen=True)
class ResolvedConfig:
    """The validated configuration of one run, where each value came from, and the profile in force."""

    workflow: str
    config: DictConfig
    role_backends: dict[str, DictConfig]
    origins: dict[str, Origin] = field(default_factory=dict)
    profile: str | None = None
    profile_changes: list[ProfileChange] = field(default_factory=list)

    def to_yaml(self) -> str:
        """The resolved config as YAML, secrets redacted, each value followed by where it came from."""
        return _annotated_yaml(OmegaConf.to_container(redact(self.config), enum_to_str=True), self.origins)

    def profile_note(self) -> str | None:
        """One line naming the profile in force and each value it changed, with the reference value."""
        if self.profile is None:
            return None
        changes = ", ".join(
            f"{change.key}={_scalar(change.value)} (reference {_scalar(change.reference)})"
            for change in self.profile_changes
        )
        return f"{self.profile} profile: {changes or 'no value changed'}"


def redact(config: DictConfig) -> DictConfig:
    """A copy of ``config`` with every secret replaced by ``***``, by key and by shape (see
    :mod:`matrix_core.redaction`)."""
    return OmegaConf.create(redaction.redact(OmegaConf.to_container(config, resolve=True)))


def is_secret(key: object) -> bool:
    """Whether a config key (``api_key``, ``hf_token``, ``Authorization``, ...) or a flag's name names a secret
    (see :func:`matrix_core.redaction.is_secret_key`)."""
    return redaction.is_secret_key(key)


def resolve(
    workflow: Component, registry: Registry, sources: Sequence[ConfigSource], profile: str | None = None
) -> ResolvedConfig:
    """Validate ``sources`` (lowest precedence first) against the schema of ``workflow`` and its components.

    The workflow's defaults come first, then ``profile`` (None: its ``demo`` profile with the ``local`` backend,
    none otherwise; ``reference``: none), then ``sources``."""
    orchestrator = workflow.cls
    defaults = [load_resource(orchestrator.default_config)] if orchestrator.default_config else []
    backend_type = _last_set([*defaults, *sources], "backend.type") or BackendConfig.type
    profile = _profile(workflow, profile, backend_type)
    profiles = [load_resource(orchestrator.profiles[profile], kind="profile")] if profile else []
    profiles = [dataclasses.replace(layer, label=f"profile {profile} {layer.label}") for layer in profiles]
    layers = [*defaults, *profiles, *sources]
    backend = _backend_component(registry, backend_type, layers, "backend.type")
    schema = _schema(workflow, registry, backend.cls.config_schema)
    config = _merged(schema, layers)
    config.workflow = workflow.name
    # The workflow's own section first: other sections' interpolations may read it (tau2's default input does).
    sections = [orchestrator.config_key] if orchestrator.config_key and orchestrator.config_schema else []
    sections += ["run", "input", "output", *(f"agents.{role}" for role in orchestrator.roles), "backend"]
    _check_sections(config, sections, layers)
    _check_interpolations(config, layers)
    if config.input.path is None and orchestrator.default_input:
        config.input.path = str(resource_path(orchestrator.default_input))
    registry.get("sinks", config.output.sink)  # an unknown sink fails here, before any work
    if config.output.path is None:
        config.output.path = workflow.name + registry.get("sinks", config.output.sink).cls.suffix
    role_backends = {role: _role_backend(config, role, registry, layers) for role in orchestrator.roles}
    origins = _origins(layers)
    orchestrator.check_config(config, origins)
    changes = _profile_changes(config, schema, defaults, origins) if profile else []
    OmegaConf.set_readonly(config, True)
    return ResolvedConfig(workflow.name, config, role_backends, origins, profile, changes)


def resolve_backend(registry: Registry, sources: Sequence[ConfigSource]) -> DictConfig:
    """``backend.*`` alone (no workflow: the other sections are not looked at), merged, typed by its backend's
    schema and checked as :func:`resolve` does it; read-only."""
    layers = [_only(layer, "backend") for layer in sources]
    backend_type = _last_set(layers, "backend.type") or BackendConfig.type
    backend = _backend_component(registry, backend_type, layers, "backend.type")
    schema = backend.cls.config_schema
    alone = dataclasses.make_dataclass("BackendAlone", [("backend", schema, field(default_factory=schema))])
    config = _merged(alone, layers)
    _check_sections(config, ["backend"], layers)
    _check_interpolations(config, layers)
    OmegaConf.set_readonly(config, True)
    return config.backend


def _only(layer: ConfigSource, key: str) -> ConfigSource:
    """``layer`` with only its ``key`` section (lines and label kept)."""
    section = OmegaConf.select(layer.data, key, default=None)
    return dataclasses.replace(layer, data=OmegaConf.create({} if section is None else {key: section}))


def _merged(schema: type, layers: Sequence[ConfigSource]) -> DictConfig:
    """``schema``'s defaults with each layer merged over them in turn; a rejected value names its layer."""
    config = OmegaConf.structured(schema)
    for layer in layers:
        try:
            config = OmegaConf.merge(config, layer.data)
        except OmegaConfBaseException as error:
            key = error.full_key or ""
            raise ConfigError(f"{layer.where(key)}: {key}: {value_problem(key, '', error)}") from None
    return config


def _check_sections(config: DictConfig, keys: Sequence[str], layers: Sequence[ConfigSource]) -> None:
    """Run each typed section's ``check()`` (see :mod:`matrix_core.config.checks`)."""
    for key in keys:
        _check_section(OmegaConf.select(config, key), key, layers)


def _check_section(node: DictConfig, prefix: str, layers: Sequence[ConfigSource]) -> None:
    try:
        section = OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        raise _resolution_error(error, layers) from None
    check_section(section, prefix, lambda key: _where(layers, key))


def _profile(workflow: Component, asked: str | None, backend_type: str) -> str | None:
    """The profile in force: the one asked for, else ``demo`` with the ``local`` backend."""
    profiles = workflow.cls.profiles
    if asked is None:
        return "demo" if backend_type == "local" and "demo" in profiles else None
    if asked == REFERENCE:
        return None
    if asked not in profiles:
        known = ", ".join([*profiles, REFERENCE])
        raise UsageError(f"--profile {asked}: workflow {workflow.name!r} has no such profile (its profiles: {known})")
    return asked


def _origins(layers: Sequence[ConfigSource]) -> dict[str, Origin]:
    """Each dotted key any layer sets -> the last layer that sets it (with its line when known)."""
    origins = {}
    for layer in layers:
        for key in _leaf_keys(OmegaConf.to_container(layer.data, resolve=False)):
            # plain ``override``: the line shown already names the key, and the override's number adds nothing there
            origins[key] = Origin(layer.kind, "override" if layer.kind == "override" else layer.where(key))
    return origins


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the values ``node`` sets (an empty mapping sets none: merged, it changes nothing)."""
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in _leaf_keys(value, f"{prefix}{name}.")]
    return [prefix.removesuffix(".")]


def _profile_changes(
    config: DictConfig, schema: type, defaults: Sequence[ConfigSource], origins: dict[str, Origin]
) -> list[ProfileChange]:
    """The values the profile put in force (not overridden later), with what the defaults alone give."""
    reference = OmegaConf.structured(schema)
    for layer in defaults:
        reference = OmegaConf.merge(reference, layer.data)
    changes = []
    for key, origin in origins.items():
        if origin.kind == "profile":
            value = OmegaConf.select(config, key)
            was = OmegaConf.select(reference, key, default=None)
            if value != was:
                changes.append(ProfileChange(key, _plain(value), _plain(was)))
    return changes


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value.value if isinstance(value, Enum) else value


def _schema(workflow: Component, registry: Registry, backend_schema: type) -> type:
    orchestrator = workflow.cls
    roles = []
    for role, agent_name in orchestrator.roles.items():
        try:
            agent = registry.get("agents", agent_name)
        except UsageError:
            raise UsageError(
                f"workflow {workflow.name!r} needs agent {agent_name!r} for role {role!r}, which no plugin registers"
            ) from None
        roles.append((role, agent.cls.config_schema, field(default_factory=agent.cls.config_schema)))
    fields: list[Any] = [
        ("workflow", str, field(default=workflow.name)),
        ("backend", backend_schema, field(default_factory=backend_schema)),
        ("run", RunConfig, field(default_factory=RunConfig)),
        ("input", InputConfig, field(default_factory=InputConfig)),
        ("output", OutputConfig, field(default_factory=OutputConfig)),
        ("agents", (agents := dataclasses.make_dataclass("Agents", roles)), field(default_factory=agents)),
    ]
    if orchestrator.config_key:
        section = orchestrator.config_schema or dict[str, Any]
        factory = orchestrator.config_schema or dict
        fields.append((orchestrator.config_key, section, field(default_factory=factory)))
    return dataclasses.make_dataclass("MatrixConfig", fields)


def _role_backend(config: DictConfig, role: str, registry: Registry, layers: Sequence[ConfigSource]) -> DictConfig:
    """``backend`` overlaid with ``agents.<role>.backend``, checked; a role that changes ``type`` starts from that
    type's defaults instead of inheriting the global backend's values."""
    override = config.agents[role].backend
    if not override:
        return config.backend
    prefix = f"agents.{role}.backend"
    backend_type = override.get("type", config.backend.type)
    backend = _backend_component(registry, backend_type, layers, f"{prefix}.type")
    if backend_type == config.backend.type:
        base = OmegaConf.merge(OmegaConf.structured(backend.cls.config_schema), config.backend)
    else:
        base = OmegaConf.structured(backend.cls.config_schema)
    try:
        merged = OmegaConf.merge(base, override)
    except OmegaConfBaseException as error:
        key = f"{prefix}.{error.full_key}"
        raise ConfigError(f"{_where(layers, key)}: {key}: {value_problem(key, '', error)}") from None
    _check_section(merged, prefix, layers)
    OmegaConf.set_readonly(merged, True)
    return merged


def _backend_component(registry: Registry, backend_type: str, layers: Sequence[ConfigSource], key: str) -> Component:
    try:
        return registry.get("backends", backend_type)
    except UsageError as error:
        raise ConfigError(f"{_where(layers, key)}: {key}: {error}") from None


def _check_interpolations(config: DictConfig, layers: Sequence[ConfigSource]) -> None:
    """Resolve every ``${...}`` once, so that one that fails is a one-line error (see :func:`_resolution_error`)."""
    try:
        OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as error:
        raise _resolution_error(error, layers) from None


def _resolution_error(error: OmegaConfBaseException, layers: Sequence[ConfigSource]) -> MatrixError:
    """What to raise for a ``${...}`` that failed (a bad reference, a plugin resolver that rejects its arguments):
    the resolver's own :class:`MatrixError`, else the key and its source."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, MatrixError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return cause
    key = error.full_key or ""
    return ConfigError(f"{_where(layers, key)}: {key}: {first_line(error)}")


def _last_set(layers: Sequence[ConfigSource], key: str) -> Any:
    for layer in reversed(layers):
        value = OmegaConf.select(layer.data, key, default=None, throw_on_missing=False)
        if value is not None:
            return value
    return None


def _where(layers: Sequence[ConfigSource], key: str) -> str:
    """The source that last set ``key``, with its line when known; ``a.lo..hi`` (two keys checked together) is found
    by either one."""
    head, pair, tail = key.partition("..")
    names = [head, f"{head.rpartition('.')[0]}.{tail}".lstrip(".")] if pair else [key]
    for layer in reversed(layers):
        for name in names:
            if _sets(layer.data, name):
                return layer.where(name)
    return "config"


def _sets(data: DictConfig, key: str) -> bool:
    """Whether ``data`` gives ``key`` a value (an interpolation counts, unresolved: it may be what failed)."""
    node: Any = OmegaConf.to_container(data, resolve=False)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node is not None


# --- display ---------------------------------------------------------------------------------------------------


def _annotated_yaml(node: Any, origins: dict[str, Origin], prefix: str = "", indent: str = "") -> str:
    """YAML of ``node`` with ``# <origin>`` after each value; a key without a recorded origin is a default."""
    lines = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.append(_annotated_yaml(value, origins, path + ".", indent + "  "))
        else:
            origin = origins.get(path) or _nearest_origin(origins, path)
            lines.append(f"{indent}{key}: {_scalar(value)}  # {origin}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _nearest_origin(origins: dict[str, Origin], key: str) -> Origin:
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return DEFAULT


def _scalar(value: Any) -> str:
    """A value as YAML on one line (``null``, ``[a, b]``, quoted strings where YAML needs them)."""
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip().removesuffix("\n...").strip()
