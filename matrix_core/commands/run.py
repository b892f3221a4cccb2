"""``matrix run WORKFLOW``: resolve the workflow, build its config, run it."""

from __future__ import annotations

from typing import Any

import click

from matrix_core.cli import user_errors
from matrix_core.commands.options import address_option, cluster_option, config_option, overrides_argument


@click.command(context_settings={"show_default": True})
@click.argument("workflow")
@overrides_argument
@config_option
@click.option("-i", "--input", "input_path", help="Input rows (sets input.path).")
@click.option("-o", "--output", "output_path", help="Output file (sets output.path).")
@click.option("--limit", type=click.IntRange(min=0), help="Run only the first N input rows (sets run.limit).")
@click.option("--resume", is_flag=True, help="Skip tasks already in the output (sets run.resume).")
@click.option(
    "--retry-errors", is_flag=True, help="With --resume, run again the tasks that ended error (sets run.retry_errors)."
)
@click.option(
    "--force", is_flag=True, help="With --resume, go on though the input or settings changed (sets run.force)."
)
@click.option("--system-prompt", help="System prompt, for workflows that take one (sets <workflow>.system_prompt).")
@click.option("--skip-bad-rows", is_flag=True, help="Note malformed rows in <output>.rejected.jsonl and go on.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display (sets run.quiet).")
@click.option(
    "--profile",
    help="Lay a named profile of the workflow over its reference defaults (demo: the laptop cuts; reference: none). "
    "Default: demo with the local backend, none otherwise.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config, secrets redacted, and exit.")
@cluster_option
@address_option
@click.option(
    "--runtime-env",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/JSON file with Ray's runtime_env for the run's actors (pip, working_dir, env_vars, ...).",
)
def run(
    workflow: str,
    overrides: tuple[str, ...],
    config_files: tuple[str, ...],
    input_path: str | None,
    output_path: str | None,
    limit: int | None,
    resume: bool,
    retry_errors: bool,
    force: bool,
    system_prompt: str | None,
    skip_bad_rows: bool,
    quiet: bool,
    profile: str | None,
    print_config: bool,
    cluster: str | None,
    address: str | None,
    runtime_env: str | None,
) -> None:
    """Run WORKFLOW over the input rows.

    Configuration is layered: the workflow's defaults, then each -c file in order, then the options above,
    then KEY=VALUE overrides (e.g. backend.model=my-model run.max_concurrency=500).
    """
    from matrix_core.cluster.connect import RayTarget, load_runtime_env

    target = user_errors(lambda: RayTarget.resolve(cluster, address, load_runtime_env(runtime_env)))
    target.apply_env()  # before anything imports Ray (plugins may), which reads its auth settings once
    flags: dict[str, Any] = {"input": {}, "output": {}, "run": {}}
    for section, key, value in [
        ("input", "path", input_path),
        ("output", "path", output_path),
        ("run", "limit", limit),
        ("run", "resume", resume or None),
        ("run", "retry_errors", retry_errors or None),
        ("run", "force", force or None),
        ("run", "quiet", quiet or None),
        ("input", "skip_bad_rows", skip_bad_rows or None),
    ]:
        if value is not None:
            flags[section][key] = value
    resolved, registry = user_errors(lambda: _resolve(workflow, config_files, overrides, flags, system_prompt, profile))
    if note := resolved.profile_note():
        click.echo(note, err=True)
    if print_config:
        click.echo(resolved.to_yaml(), nl=False)
        return
    from matrix_core.engine.run import run_workflow

    metrics = user_errors(lambda: run_workflow(resolved, registry, target))
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(metrics["status"].items())) or "nothing to do"
    click.echo(
        f"{metrics['tasks']} tasks ({statuses}) in {metrics['wall_time_s']:.1f}s, "
        f"{metrics['tokens_per_s']:.0f} tokens/s -> {resolved.config.output.path}",
        err=True,
    )
    for cap in metrics.get("caps", []):
        if cap["reached"]:
            click.echo(
                f"cap reached: {cap['setting']} held role {cap['role']!r} at {cap['limit']} at once "
                f"(run.max_concurrency asks {cap['asked']})",
                err=True,
            )
    from matrix_core.engine.plugin_calls import PluginFault, guarded

    try:
        line = guarded(registry.get("orchestrators", resolved.workflow).cls, "summary", metrics, log=False)
    except PluginFault as fault:  # the run is done and written: a broken summary line costs only that line
        line = f"warning: {fault.reason.removeprefix('engine: ')}"
    if line:
        click.echo(line, err=True)


def _resolve(
    workflow: str,
    config_files: tuple[str, ...],
    overrides: tuple[str, ...],
    flags: dict[str, Any],
    system_prompt: str | None,
    profile: str | None,
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
    return config.resolve(component, registry, sources, profile), registry
