"""``matrix report OUTPUT...``: one self-contained HTML page of a run, or of several runs side by side."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("outputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the page. Default: <stem>.report.html beside the output; with several, "
    "<first stem>.compare.html.",
)
def report(outputs: tuple[Path, ...], html_path: Path | None) -> None:
    """Write the report of the run whose output is OUTPUT: throughput, in flight, latency per role, statuses,
    errors and the workflow's own sections, in one HTML file that opens offline. With several OUTPUTs, one page
    compares the runs side by side."""
    from matrix_core.plugins import load_plugins
    from matrix_core.report.build import write_report

    page = write_report(list(outputs), load_plugins().registry, html_path)
    click.echo(f"report -> {page}", err=True)
