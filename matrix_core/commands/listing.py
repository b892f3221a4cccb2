"""``matrix plugins|workflows|agents|backends list``: what the installed plugins provide.

The four are one command: one line per plugin (or component) that fits the terminal, long values cut with an
ellipsis; ``--verbose`` every field; ``--json`` the same as JSON, for scripts."""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import click

from matrix_core.commands import serve as serving

if TYPE_CHECKING:
    from matrix_core.plugins import Plugins

GAP = "  "
"""Between two columns of the one-line form."""
ELLIPSIS = "…"
"""Ends a value cut to fit the terminal."""


@dataclass(frozen=True)
class Listing:
    """What one ``list`` command shows: its ``--json`` objects, and the columns of its one line per object."""

    rows: Callable[[Plugins], list[dict[str, Any]]]
    """The ``--json`` objects, from the loaded plugins."""
    columns: dict[str, Callable[[dict[str, Any]], Any]]
    """Header -> an object's cell; the last column gets what room is left, and is cut to fit."""


def list_command(listing: Listing, summary: str) -> click.Command:
    """The ``list`` command of ``listing``: one line per object, ``--verbose`` every field, ``--json`` as JSON."""

    @click.command("list", help=summary)
    @click.option("--json", "as_json", is_flag=True, help="Print every field as JSON.")
    @click.option("--verbose", is_flag=True, help="Print every field, a block per entry.")
    def list_(as_json: bool, verbose: bool) -> None:
        from matrix_core.plugins import load_plugins

        rows = listing.rows(load_plugins())
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        width = shutil.get_terminal_size().columns  # $COLUMNS, else the terminal's, else 80
        click.echo("\n".join(_blocks(rows, width) if verbose else _lines(rows, listing.columns, width)))

    return list_


def _lines(rows: list[dict[str, Any]], columns: dict[str, Callable[[dict[str, Any]], Any]], width: int) -> list[str]:
    """A header and one line per row, each at most ``width`` characters: every column but the last as wide as its
    widest cell, the last cut to fit."""
    table = [list(columns), *([_text(cell(row)) for cell in columns.values()] for row in rows)]
    widths = [max(len(line[index]) for line in table) for index in range(len(columns) - 1)]
    last = sum(widths) + len(GAP) * len(widths)  # where the last column starts
    lines = []
    for line in table:
        padded = [cell.ljust(size) for cell, size in zip(line[:-1], widths, strict=True)]
        lines.append(_cut(GAP.join([*padded, line[-1]]), width, last))
    return lines


def _blocks(rows: list[dict[str, Any]], width: int) -> list[str]:
    """Every field of every row that has a value: the row's name, then its fields indented, wrapped between words."""
    lines: list[str] = []
    for row in rows:
        if lines:
            lines.append("")
        lines.append(_cut(str(row["name"]), width))
        for key, value in row.items():
            if key != "name":
                lines += _field(key, value, "  ", width)
    return lines


def _field(key: str, value: Any, indent: str, width: int) -> list[str]:
    if value is None or value == "" or value == [] or value == {}:
        return []
    if isinstance(value, dict):
        nested = [line for name, item in value.items() for line in _field(str(name), item, indent + "  ", width)]
        return [_cut(f"{indent}{key}:", width), *nested]
    wrapped = textwrap.wrap(
        f"{key}: {_text(value)}",
        width,
        initial_indent=indent,
        subsequent_indent=indent + "    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [_cut(line, width) for line in wrapped]  # a word longer than the line, cut


def _text(value: Any) -> str:
    """``value`` on one line: a list's items joined by commas, a dict's as ``key: items`` joined by semicolons."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_text(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return " ".join(str(value).split())


def _cut(text: str, width: int, start: int = 0) -> str:
    """``text`` in at most ``width`` characters: cut with an ellipsis after the last word that fits, or inside a word
    only when no space after ``start`` leaves one whole."""
    text = text.rstrip()
    if len(text) <= width:
        return text
    head = text[: max(width - len(ELLIPSIS), 0)]
    if not text[len(head)].isspace():  # the cut falls inside a word: end before it
        space = head.rfind(" ")
        if space > start:
            head = head[:space]
    return head.rstrip(" ,;") + ELLIPSIS


NAMED: dict[str, Callable[[dict[str, Any]], Any]] = {"NAME": itemgetter("name"), "PLUGIN": itemgetter("plugin")}
"""The first columns of a component listing."""
DESCRIBED = {**NAMED, "DESCRIPTION": itemgetter("description")}


def _components(kind: str, fields: Callable[[Any], dict[str, Any]]) -> Callable[[Plugins], list[dict[str, Any]]]:
    """The rows of a component listing: what every component has (:func:`_common`), then ``fields`` of its class."""
    return lambda loaded: [
        {**_common(component), **fields(component.cls)} for component in loaded.registry.components(kind)
    ]


@click.group()
def plugins() -> None:
    """Installed plugins."""


plugins.add_command(
    list_command(
        Listing(
            rows=lambda loaded: [info.to_json() for info in loaded.infos],
            columns={
                "NAME": itemgetter("name"),
                "VERSION": itemgetter("version"),
                "SOURCE": itemgetter("source"),
                "STATUS": itemgetter("status"),
                "PROVIDES OR ERROR": lambda row: row["error"] or _provides(row["components"]),
            },
        ),
        "List plugins in load order. One line each: version, source, status, and what it registered or why it "
        "failed; --verbose adds the hooks it implements.",
    )
)


KIND_WORDS = {"orchestrators": "workflow", "agents": "agent", "backends": "backend", "sinks": "sink"}


def _provides(components: dict[str, list[str]]) -> str:
    """``2 backends, 1 sink``: how many components of each kind a plugin registered (their names: --verbose)."""
    counts = [(len(names), KIND_WORDS.get(kind, kind.removesuffix("s"))) for kind, names in components.items()]
    return ", ".join(f"{count} {word}{'' if count == 1 else 's'}" for count, word in counts if count) or "nothing"


@click.group()
def workflows() -> None:
    """Workflows (`matrix run NAME`)."""


workflows.add_command(
    list_command(
        Listing(
            rows=_components("orchestrators", lambda cls: {"roles": dict(cls.roles), "config_key": cls.config_key}),
            columns={**NAMED, "ROLES": lambda row: list(row["roles"])},
        ),
        "List workflows and their roles. --verbose adds the agent serving each role and the workflow's own config "
        "section.",
    )
)


@click.group()
def agents() -> None:
    """Agents that workflows assign to roles."""


agents.add_command(
    list_command(
        Listing(_components("agents", lambda cls: {"options": _options(cls.config_schema)}), DESCRIBED),
        "List agents. --verbose adds their options (`agents.<role>.<option>=VALUE`).",
    )
)


@click.group()
def backends() -> None:
    """LLM backends (`backend.type=NAME`)."""


backends.add_command(
    list_command(
        Listing(_components("backends", lambda cls: {"options": _options(cls.config_schema, skip="type")}), DESCRIBED),
        "List backends. --verbose adds their options (`backend.<option>=VALUE`).",
    )
)


backends.add_command(serving.serve, "start")
backends.add_command(serving.stop)
backends.add_command(serving.check)


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
