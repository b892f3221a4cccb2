"""The ``matrix`` command line. Subcommands live in :mod:`matrix_core.commands` and load only when invoked, so
``matrix --help`` imports neither ray nor any backend library."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from matrix_core import __version__
from matrix_core.errors import MatrixError
from matrix_core.redaction import RedactingFilter, redact_value

SUBCOMMANDS = {
    "run": "matrix_core.commands.run:run",
    "plugins": "matrix_core.commands.listing:plugins",
    "workflows": "matrix_core.commands.listing:workflows",
    "agents": "matrix_core.commands.listing:agents",
    "backends": "matrix_core.commands.listing:backends",
    "serve": "matrix_core.commands.serve:serve",
    "cluster": "matrix_core.commands.cluster:cluster",
    "metrics": "matrix_core.commands.metrics:metrics",
    "report": "matrix_core.commands.report:report",
}


class UserError(click.ClickException):
    """A :class:`MatrixError` shown the click way: ``Error: <message>`` on stderr, no traceback, secrets hidden."""

    def __init__(self, error: MatrixError) -> None:
        super().__init__(redact_value(str(error)))
        self.exit_code = error.exit_code
        self.hint = redact_value(error.hint) if error.hint else None

    def format_message(self) -> str:
        return self.message + (f"\nHint: {self.hint}" if self.hint else "")


def user_errors(function: Any) -> Any:
    """Run ``function`` turning a :class:`MatrixError` into a clean CLI error."""
    try:
        return function()
    except MatrixError as error:
        raise UserError(error) from None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported by name on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        return user_errors(lambda: super(LazyGroup, self).invoke(ctx))


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from matrix_core.plugins import load_plugins

    click.echo(f"matrix-core {__version__}")
    for info in user_errors(load_plugins).infos:
        if info.source != "builtin":
            click.echo(f"  {info.name} {info.version or '?'}" + ("" if info.status == "ok" else f" ({info.status})"))
    ctx.exit()


def _configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("matrix_core").setLevel(level)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version of matrix-core and of every installed plugin.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages (and plugin tracebacks).")
def cli(verbose: bool) -> None:
    """Matrix: generate synthetic data with many LLM agents, peer to peer on Ray.

    Workflows and backends come from plugins: `matrix plugins list` shows what is installed,
    `matrix run WORKFLOW` runs one.
    """
    _configure_logging(verbose)


def main() -> None:
    """Entry point of the ``matrix`` console script."""
    cli(prog_name="matrix")
