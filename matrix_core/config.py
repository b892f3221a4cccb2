"""Run configuration: workflow defaults < ``-c`` files (in order) < ``KEY=VALUE`` overrides, typed by dataclasses.

omegaconf does the checking: the schema is built from the core's dataclasses below plus the ones the chosen
workflow, agents and backends declare, so an unknown key or a wrong type is rejected with its dotted path. Each
source is merged on its own so that an error names the file and line (or the override) it came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from matrix_core import redaction
from matrix_core.errors import ConfigError, MatrixError, UsageError
from matrix_core.redaction import REDACTED as REDACTED

if TYPE_CHECKING:
    from matrix_core.registry import Component, Registry


@dataclass
class BackendConfig:
    """``backend.*``: which LLM backend serves the agents, and where. Backends extend it with their options."""

    type: str = "local"
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None


class Routing(Enum):
    """How an actor picks which actor of the next role receives a task (see docs/engine.md)."""

    least_loaded = "least_loaded"
    round_robin = "round_robin"
    sticky = "sticky"


@dataclass
class AgentConfig:
    """``agents.<role>.*``: how many actors serve a role, how many steps each runs at once, its backend."""

    replicas: int = 1
    max_in_flight: int | None = None
    """Steps one actor runs at once; null: as many as the run can have in flight, so that ``run.max_concurrency``
    alone sets how many requests the backends see. A number caps it (the run says so when the cap binds)."""
    routing: Routing = Routing.least_loaded
    backend: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """``run.*``: how the run is driven."""

    max_concurrency: int = 256
    seed: int = 0
    limit: int | None = None
    resume: bool = False
    retry_errors: bool = False
    """With ``resume``: run again the tasks whose records ended ``error`` (their records are replaced)."""
    force: bool = False
    """With ``resume``: go on even if the input or the settings changed since the run began (``<stem>.run.json``)."""
    partitions: int = 1
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    offload_threshold_bytes: int = 65536
    coalesce: bool = True
    coalesce_window_ms: float = 0.0
    quiet: bool = False
    outage_timeout_s: float = 600.0
    """How long a backend may fail every request (admission paused, steps waiting) before the run stops,
    resumable; 0 stops at once."""
    stall_timeout_s: float = 600.0
    """How long a run may go with no task finished and no step completed (a backend outage aside) before it stops,
    naming where its tasks are held, resumable; 0 never stops it."""


@dataclass
class InputConfig:
    """``input.*``: where tasks come from and how each gets its id."""

    path: str | None = None
    format: str | None = None
    id_key: str = "id"
    skip_bad_rows: bool = False


@dataclass
class OutputConfig:
    """``output.*``: where records go (default: ``<workflow><sink suffix>`` in the current directory)."""

    path: str | None = None
    sink: str = "jsonl"
    fsync_interval_s: float = 5.0
    """Seconds between two ``fsync`` of the output and the files beside it (each record is flushed at once, and every
    file is synced at close): what a power loss may cost at most. 0 syncs after every batch of records."""


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
class ConfigSource:
    """One layer of configuration and where it came from, to name it in errors; ``kind`` as in :class:`Origin`."""

    label: str
    data: DictConfig
    lines: dict[str, int] = field(default_factory=dict)
    kind: str = "file"

    def where(self, key: str) -> str:
        """``label:line`` for ``key`` (or its nearest parent with a known line), else the label."""
        while key:
            if key in self.lines:
                return f"{self.label}:{self.lines[key]}"
            key = key.rpartition(".")[0]
        return self.label


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


# --- sources ---------------------------------------------------------------------------------------------------


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


def load_file(path: str | Path, label: str | None = None) -> ConfigSource:
    """Read a YAML config file into a source; invalid YAML is an error naming the file and line."""
    path = Path(path)
    label = label or str(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"{label}: cannot read config file ({error.strerror})") from None
    return _parse_yaml(text, label)


def load_resource(spec: str, kind: str = "default") -> ConfigSource:
    """Read ``"package:file.yaml"`` shipped inside an installed package (a workflow's defaults or a profile)."""
    package, _, name = spec.partition(":")
    try:
        text = resources.files(package).joinpath(name).read_text()
    except (ModuleNotFoundError, OSError) as error:
        raise UsageError(f"{spec}: cannot read default config ({error})") from None
    return dataclasses.replace(_parse_yaml(text, spec), kind=kind)


def _resource_path(spec: str) -> Path:
    """The file behind ``"package:path/in/package"`` (installed packages are plain files)."""
    package, _, name = spec.partition(":")
    path = Path(str(resources.files(package).joinpath(name)))
    if not path.is_file():
        raise UsageError(f"{spec}: the workflow's default input is missing from its package")
    return path


def _parse_yaml(text: str, label: str) -> ConfigSource:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{label}{line}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}:1: a config file must be a mapping of keys, got {type(data).__name__}")
    return ConfigSource(label, OmegaConf.create(data), _key_lines(node))


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines


def parse_overrides(items: Sequence[str]) -> list[ConfigSource]:
    """Turn ``KEY=VALUE`` command-line items into sources (values parsed as YAML: ``3`` is an int), each labelled
    ``override #N``. An error names the override by its position and key, never by its value: that may be a secret
    (and an item without ``=`` may be a secret typed alone)."""
    sources = []
    for number, item in enumerate(items, start=1):
        key, equals, value = item.partition("=")
        label = f"override #{number}"
        if not equals or not key.strip():
            raise UsageError(f"{label} is not KEY=VALUE", hint="its text is not repeated: it may hold a secret")
        try:
            data = OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as error:
            key = key.strip()
            raise ConfigError(f"{label}: {key}: {_problem(key, value, error)}") from None
        sources.append(ConfigSource(label, data, kind="override"))
    return sources


def _problem(key: str, value: str, error: Exception) -> str:
    """What is wrong with ``key``'s value, without the value: none of it for a secret's key."""
    if any(redaction.is_secret_key(part) for part in key.split(".")):
        return "invalid value (not shown: a secret)"
    return _first_line(error).replace(value, REDACTED) if value else _first_line(error)


def source_from(label: str, values: dict[str, Any]) -> ConfigSource:
    """A source built from a nested dict (command-line flags such as ``-i``)."""
    return ConfigSource(label, OmegaConf.create(values), kind="flag")


# --- resolution ------------------------------------------------------------------------------------------------


REFERENCE = "reference"
"""The profile name that asks for the workflow's defaults, its reference settings, whatever the backend."""


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
    config = OmegaConf.structured(schema)
    for layer in layers:
        try:
            config = OmegaConf.merge(config, layer.data)
        except OmegaConfBaseException as error:
            key = error.full_key or ""
            raise ConfigError(f"{layer.where(key)}: {key}: {_problem(key, '', error)}") from None
    config.workflow = workflow.name
    _check_interpolations(config, layers)
    if config.input.path is None and orchestrator.default_input:
        config.input.path = str(_resource_path(orchestrator.default_input))
    registry.get("sinks", config.output.sink)  # an unknown sink fails here, before any work
    if config.output.path is None:
        config.output.path = workflow.name + registry.get("sinks", config.output.sink).cls.suffix
    _check_ranges(config, layers)
    role_backends = {role: _role_backend(config, role, registry, layers) for role in orchestrator.roles}
    origins = _origins(layers)
    orchestrator.check_config(config, origins)
    changes = _profile_changes(config, schema, defaults, origins) if profile else []
    OmegaConf.set_readonly(config, True)
    return ResolvedConfig(workflow.name, config, role_backends, origins, profile, changes)


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
    """``backend`` overlaid with ``agents.<role>.backend``; a role that changes ``type`` starts from that type's
    defaults instead of inheriting the global backend's values."""
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
        raise ConfigError(f"{_where(layers, key)}: {key}: {_first_line(error)}") from None
    OmegaConf.set_readonly(merged, True)
    return merged


def _backend_component(registry: Registry, backend_type: str, layers: Sequence[ConfigSource], key: str) -> Component:
    try:
        return registry.get("backends", backend_type)
    except UsageError as error:
        raise ConfigError(f"{_where(layers, key)}: {key}: {error}") from None


def _check_interpolations(config: DictConfig, layers: Sequence[ConfigSource]) -> None:
    """Resolve every ``${...}`` once, so that one that fails (a bad reference, a plugin resolver that rejects its
    arguments) is a one-line error: the resolver's own :class:`MatrixError`, else the key and its source."""
    try:
        OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, MatrixError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        key = error.full_key or ""
        raise ConfigError(f"{_where(layers, key)}: {key}: {_first_line(error)}") from None


def _check_ranges(config: DictConfig, layers: Sequence[ConfigSource]) -> None:
    minimums = {"run.max_concurrency": 1, "run.limit": 0, "run.partitions": 1, "run.max_retries": 0}
    minimums["run.stall_timeout_s"] = 0
    for role in config.agents:
        minimums[f"agents.{role}.replicas"] = 1
        minimums[f"agents.{role}.max_in_flight"] = 1
    for key, minimum in minimums.items():
        value = OmegaConf.select(config, key)
        if value is not None and value < minimum:
            raise ConfigError(f"{_where(layers, key)}: {key}: must be at least {minimum}, got {value}")


def _last_set(layers: Sequence[ConfigSource], key: str) -> Any:
    for layer in reversed(layers):
        value = OmegaConf.select(layer.data, key, default=None, throw_on_missing=False)
        if value is not None:
            return value
    return None


def _where(layers: Sequence[ConfigSource], key: str) -> str:
    """The source that last set ``key``, with its line when known."""
    for layer in reversed(layers):
        if _sets(layer.data, key):
            return layer.where(key)
    return "config"


def _sets(data: DictConfig, key: str) -> bool:
    """Whether ``data`` gives ``key`` a value (an interpolation counts, unresolved: it may be what failed)."""
    node: Any = OmegaConf.to_container(data, resolve=False)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node is not None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
