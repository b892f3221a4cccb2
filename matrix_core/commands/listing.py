"""``matrix plugins|workflows|agents|backends list``: what the installed plugins provide."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from typing import Any

import click

from matrix_core.cli import user_errors
from matrix_core.commands import serve as engines

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _plugins() -> Any:
    from matrix_core.plugins import load_plugins

    return user_errors(load_plugins)


def _emit(title: str, rows: list[dict[str, Any]], columns: dict[str, str], as_json: bool) -> None:
    """Print ``rows`` as JSON, or as a rich table of ``columns`` (row key -> header)."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in columns.values():
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[key]) for key in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    """Plain text for a table cell, escaped so that rich does not read ``[str, Any]`` as markup."""
    from rich.markup import escape

    if isinstance(value, dict):
        return "\n".join(f"{escape(str(key))}: {_cell(item)}" for key, item in value.items())
    if isinstance(value, list):
        return escape(", ".join(str(item) for item in value))
    return "" if value is None else escape(str(value))


@click.group()
def plugins() -> None:
    """Installed plugins."""


@plugins.command("list")
@json_option
def list_plugins(as_json: bool) -> None:
    """List plugins in load order: version, hooks, what each registered, and load errors."""
    rows = [info.to_json() for info in _plugins().infos]
    if not as_json:  # the table is narrow: hooks by their short name
        rows = [{**row, "hooks": [hook.removeprefix("matrix_register_") for hook in row["hooks"]]} for row in rows]
    columns = {"name": "Plugin", "version": "Version", "source": "Source", "status": "Status", "hooks": "Hooks"}
    columns |= {"components": "Components", "error": "Error"}
    _emit("Plugins", rows, columns, as_json)


@click.group()
def workflows() -> None:
    """Workflows (`matrix run NAME`)."""


@workflows.command("list")
@json_option
def list_workflows(as_json: bool) -> None:
    """List workflows with their roles and the agent serving each."""
    rows = [
        {**_common(component), "roles": dict(component.cls.roles), "config_key": component.cls.config_key}
        for component in _plugins().registry.components("orchestrators")
    ]
    columns = {"name": "Workflow", "plugin": "Plugin", "roles": "Roles", "config_key": "Options", "description": ""}
    _emit("Workflows", rows, columns, as_json)


@click.group()
def agents() -> None:
    """Agents that workflows assign to roles."""


@agents.command("list")
@json_option
def list_agents(as_json: bool) -> None:
    """List agents and their options."""
    rows = [
        {**_common(component), "options": _options(component.cls.config_schema)}
        for component in _plugins().registry.components("agents")
    ]
    _emit("Agents", rows, {"name": "Agent", "plugin": "Plugin", "options": "Options", "description": ""}, as_json)


@click.group()
def backends() -> None:
    """LLM backends (`backend.type=NAME`)."""


@backends.command("list")
@json_option
def list_backends(as_json: bool) -> None:
    """List backends and their options (`backend.<option>=VALUE`)."""
    rows = [
        {**_common(component), "options": _options(component.cls.config_schema, skip="type")}
        for component in _plugins().registry.components("backends")
    ]
    _emit("Backends", rows, {"name": "Backend", "plugin": "Plugin", "options": "Options", "description": ""}, as_json)


backends.add_command(engines.serve, "start")
backends.add_command(engines.stop)
backends.add_command(engines.check)


def _common(component: Any) -> dict[str, Any]:
    return {
        "name": component.name,
        "plugin": component.plugin,
        "class": component.target,
        "description": component.description,
    }


def _options(schema: type, skip: str = "") -> dict[str, str]:
    """Each field of a config dataclass (but ``skip``) as ``type = default``."""
    options = {}
    for option in dataclasses.fields(schema):
        if option.name == skip:
            continue
        if isinstance(option.default, Enum):
            default = repr(option.default.value)
        elif option.default is not dataclasses.MISSING:
            default = repr(option.default)
        elif option.default_factory is not dataclasses.MISSING:
            default = repr(option.default_factory())
        else:
            default = "required"
        kind = option.type if isinstance(option.type, str) else getattr(option.type, "__name__", str(option.type))
        options[option.name] = f"{kind} = {default}"
    return options
