"""Layers of configuration, each with where it came from: YAML files (with the line of each key), resources shipped
in packages, command-line flags and ``KEY=VALUE`` overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from matrix_core.config.checks import value_problem
from matrix_core.errors import ConfigError, UsageError, first_line


@dataclass(frozen=True)
class ConfigSource:
    """One layer of configuration and where it came from, to name it in errors; ``kind`` as in
    :class:`~matrix_core.config.Origin`."""

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


def resource_path(spec: str) -> Path:
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
        problem = getattr(error, "problem", None) or first_line(error)
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
            raise ConfigError(f"{label}: {key}: {value_problem(key, value, error)}") from None
        sources.append(ConfigSource(label, data, kind="override"))
    return sources


def source_from(label: str, values: dict[str, Any]) -> ConfigSource:
    """A source built from a nested dict (command-line flags such as ``-i``)."""
    return ConfigSource(label, OmegaConf.create(values), kind="flag")


def sources_for(
    config_files: Sequence[str | Path], overrides: Sequence[str], flags: Mapping[str, Any] | None = None
) -> list[ConfigSource]:
    """The command line's layers, lowest precedence first: each ``-c`` file in order, then ``flags`` (a nested dict,
    labelled ``command-line options``; None: no such layer), then the ``KEY=VALUE`` overrides."""
    sources = [load_file(path) for path in config_files]
    if flags is not None:
        sources.append(source_from("command-line options", dict(flags)))
    return sources + parse_overrides(overrides)
