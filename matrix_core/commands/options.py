"""The options several subcommands share, so ``matrix run`` and ``matrix serve`` read the same."""

from __future__ import annotations

import click

from matrix_core.redaction import is_secret_key, redact_value

config_option = click.option(
    "-c",
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML config file; repeat to layer several, later ones win.",
)
cluster_option = click.option(
    "--cluster", metavar="NAME", help="Use a cluster started with `matrix cluster start NAME`."
)
address_option = click.option(
    "--address", help="Use an existing Ray cluster: HOST:PORT, ray://HOST:PORT or auto (default: a private local Ray)."
)


def warn_of_secrets(ctx: click.Context, _param: click.Parameter, overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Warn, one line per override, of a secret typed on the command line (by its key or its shape): other users
    see it in ``ps``. It still works."""
    for item in () if ctx.resilient_parsing else overrides:
        key, equals, value = item.partition("=")
        name = key.rpartition(".")[2]
        if equals and (is_secret_key(name) or redact_value(value) != value):
            instead = f"{key}_env=VAR or a -c file" if name == "api_key" else "${oc.env:VAR} in a -c file"
            click.echo(f"Warning: {key} on the command line is visible to other users (ps); use {instead}", err=True)
    return overrides


overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...", callback=warn_of_secrets)
