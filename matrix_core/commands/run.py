"""``matrix run WORKFLOW``: resolve the workflow, build its config, run it."""

from __future__ import annotations

from typing import Any

import click

from matrix_core.cli import user_errors


@click.command(context_settings={"show_default": True})
@click.argument("workflow")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "-c",
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML config file; repeat to layer several, later ones win.",
)
@click.option("-i", "--input", "input_path", help="Input rows (sets input.path).")
@click.option("-o", "--output", "output_path", help="Output file (sets output.path).")
@click.option("--limit", type=click.IntRange(min=0), help="Run only the first N input rows (sets run.limit).")
@click.option("--resume", is_flag=True, help="Skip tasks already in the output (sets run.resume).")
@click.option("--print-config", is_flag=True, help="Print the resolved config, secrets redacted, and exit.")
def run(
    workflow: str,
    overrides: tuple[str, ...],
    config_files: tuple[str, ...],
    input_path: str | None,
    output_path: str | None,
    limit: int | None,
    resume: bool,
    print_config: bool,
) -> None:
    """Run WORKFLOW over the input rows.

    Configuration is layered: the workflow's defaults, then each -c file in order, then the options above,
    then KEY=VALUE overrides (e.g. backend.model=my-model run.max_concurrency=500).
    """
    resolved = user_errors(lambda: _resolve(workflow, config_files, overrides, input_path, output_path, limit, resume))
    if print_config:
        click.echo(resolved.to_yaml(), nl=False)
        return
    raise click.ClickException(
        f"configuration of {workflow!r} is valid, but this build has no engine to run it yet "
        "(use --print-config to inspect it)"
    )


def _resolve(
    workflow: str,
    config_files: tuple[str, ...],
    overrides: tuple[str, ...],
    input_path: str | None,
    output_path: str | None,
    limit: int | None,
    resume: bool,
) -> Any:
    from matrix_core import config
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    component = registry.get("orchestrators", workflow)
    flags: dict[str, Any] = {}
    if input_path is not None:
        flags.setdefault("input", {})["path"] = input_path
    if output_path is not None:
        flags.setdefault("output", {})["path"] = output_path
    if limit is not None:
        flags.setdefault("run", {})["limit"] = limit
    if resume:
        flags.setdefault("run", {})["resume"] = True
    sources = [config.load_file(path) for path in config_files]
    sources.append(config.source_from("command-line options", flags))
    sources += config.parse_overrides(overrides)
    return config.resolve(component, registry, sources)
