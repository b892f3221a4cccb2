"""The options several subcommands share, so ``matrix run`` and ``matrix serve`` read the same."""

from __future__ import annotations

import click

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
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
