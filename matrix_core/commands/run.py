"""``matrix run WORKFLOW``: resolve the workflow, build its config, run it."""

from __future__ import annotations

import click

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
@click.option("--report", is_flag=True, help="At the end, write the run's report: <output stem>.report.html.")
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
    report: bool,
    print_config: bool,
    cluster: str | None,
    address: str | None,
    runtime_env: str | None,
) -> None:
    """Run WORKFLOW over the input rows.

    Configuration is layered: the workflow's defaults, then each -c file in order, then the options above,
    then KEY=VALUE overrides (e.g. backend.model=my-model run.max_concurrency=500).
    """
    from matrix_core.api import RunOptions, resolve_run
    from matrix_core.cluster.connect import RayTarget, load_runtime_env

    target = RayTarget.resolve(cluster, address, load_runtime_env(runtime_env))
    target.apply_env()  # before anything imports Ray (plugins may), which reads its auth settings once
    options = RunOptions(
        input_path, output_path, limit, resume, retry_errors, force, quiet, skip_bad_rows, system_prompt
    )
    resolved, registry = resolve_run(
        workflow, overrides=overrides, config_files=config_files, options=options, profile=profile
    )
    if note := resolved.profile_note():
        click.echo(note, err=True)
    if print_config:
        click.echo(resolved.to_yaml(), nl=False)
        return
    from matrix_core.engine.run import run_workflow

    metrics = run_workflow(resolved, registry, target)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(metrics.status.items())) or "nothing to do"
    click.echo(
        f"{metrics.tasks} tasks ({statuses}) in {metrics.wall_time_s:.1f}s, "
        f"{metrics.tokens_per_s:.0f} tokens/s -> {resolved.config.output.path}",
        err=True,
    )
    for cap in metrics.engine.caps:
        if cap.reached:
            click.echo(
                f"cap reached: {cap.setting} held role {cap.role!r} at {cap.limit} at once "
                f"(run.max_concurrency asks {cap.asked})",
                err=True,
            )
    from matrix_core.engine.plugin_calls import PluginFault, guarded

    try:
        line = guarded(registry.get("orchestrators", resolved.workflow).cls, "summary", metrics, log=False)
    except PluginFault as fault:  # the run is done and written: a broken summary line costs only that line
        line = f"warning: {fault.reason.removeprefix('engine: ')}"
    if line:
        click.echo(line, err=True)
    if report:
        from pathlib import Path

        from matrix_core.report.build import write_report

        page = write_report([Path(resolved.config.output.path)], registry)
        click.echo(f"report -> {page}", err=True)
