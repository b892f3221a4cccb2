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
@click.option("--system-prompt", help="System prompt, for workflows that take one (sets <workflow>.system_prompt).")
@click.option("--skip-bad-rows", is_flag=True, help="Note malformed rows in <output>.rejected.jsonl and go on.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display (sets run.quiet).")
@click.option("--print-config", is_flag=True, help="Print the resolved config, secrets redacted, and exit.")
def run(
    workflow: str,
    overrides: tuple[str, ...],
    config_files: tuple[str, ...],
    input_path: str | None,
    output_path: str | None,
    limit: int | None,
    resume: bool,
    system_prompt: str | None,
    skip_bad_rows: bool,
    quiet: bool,
    print_config: bool,
) -> None:
    """Run WORKFLOW over the input rows.

    Configuration is layered: the workflow's defaults, then each -c file in order, then the options above,
    then KEY=VALUE overrides (e.g. backend.model=my-model run.max_concurrency=500).
    """
    flags: dict[str, Any] = {"input": {}, "output": {}, "run": {}}
    for section, key, value in [
        ("input", "path", input_path),
        ("output", "path", output_path),
        ("run", "limit", limit),
        ("run", "resume", resume or None),
        ("run", "quiet", quiet or None),
        ("input", "skip_bad_rows", skip_bad_rows or None),
    ]:
        if value is not None:
            flags[section][key] = value
    resolved, registry = user_errors(lambda: _resolve(workflow, config_files, overrides, flags, system_prompt))
    if print_config:
        click.echo(resolved.to_yaml(), nl=False)
        return
    from matrix_core.engine.run import run_workflow

    metrics = user_errors(lambda: run_workflow(resolved, registry))
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(metrics["status"].items())) or "nothing to do"
    click.echo(
        f"{metrics['tasks']} tasks ({statuses}) in {metrics['wall_time_s']:.1f}s, "
        f"{metrics['tokens_per_s']:.0f} tokens/s -> {resolved.config.output.path}",
        err=True,
    )


def _resolve(
    workflow: str,
    config_files: tuple[str, ...],
    overrides: tuple[str, ...],
    flags: dict[str, Any],
    system_prompt: str | None,
) -> Any:
    from matrix_core import config
    from matrix_core.errors import UsageError
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    component = registry.get("orchestrators", workflow)
    if system_prompt is not None:
        if not component.cls.config_key:
            raise UsageError(f"workflow {workflow!r} takes no --system-prompt")
        flags[component.cls.config_key] = {"system_prompt": system_prompt}
    sources = [config.load_file(path) for path in config_files]
    sources.append(config.source_from("command-line options", flags))
    sources += config.parse_overrides(overrides)
    return config.resolve(component, registry, sources), registry
