"""``matrix cluster ...``: start a Ray cluster on SLURM (or on this machine), grow it, inspect it, stop it."""

from __future__ import annotations

import json

import click

from matrix_core.cluster.state import LOOPBACK

TIMEOUT = click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds to wait for nodes to come up (queue time included) before giving up.",
)


@click.group()
def cluster() -> None:
    """Ray clusters for `matrix run --cluster NAME`: on SLURM through submitit, or on this machine (--local).

    State lives in ~/.matrix/clusters/NAME/ (MATRIX_HOME overrides ~/.matrix).
    """


@cluster.command()
@click.argument("name")
@click.option(
    "--slurm",
    "slurm_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A SLURM option for every job (submitit's names): partition, account, qos, gpus_per_node, "
    "cpus_per_task, mem, time (minutes), constraint, ... Repeat for several.",
)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Worker nodes to start.")
@click.option("--local", "local_nodes", is_flag=True, help="Run the nodes as processes on this machine, not on SLURM.")
@click.option(
    "--prometheus",
    "with_prometheus",
    is_flag=True,
    help="Also run Prometheus on the head node (no authentication: listens on 127.0.0.1 unless --metrics-host).",
)
@click.option(
    "--metrics-host",
    metavar="HOST",
    default=LOOPBACK,
    show_default=True,
    help="Where Prometheus listens: another address (0.0.0.0: every interface) opens it, unauthenticated, to "
    "whoever reaches it. Ray's own metrics exporters listen on every interface of each node, read-only and "
    "unauthenticated: Ray has no option for it (docs/clusters.md).",
)
@click.option(
    "--dashboard",
    "with_dashboard",
    is_flag=True,
    help="Also run Ray's dashboard (and its Jobs API, which runs code) on the head's own address, behind the "
    "cluster's token (Ray's token authentication). Off by default.",
)
@TIMEOUT
def start(
    name: str,
    slurm_options: tuple[str, ...],
    workers: int,
    local_nodes: bool,
    with_prometheus: bool,
    metrics_host: str,
    with_dashboard: bool,
    timeout_s: float,
) -> None:
    """Start cluster NAME: the Ray head first, then --workers workers joining it."""
    from matrix_core.cluster import control, slurm

    state = control.start_cluster(
        name,
        local_nodes=local_nodes,
        slurm_options=slurm.parse_options(slurm_options),
        workers=workers,
        with_prometheus=with_prometheus,
        timeout_s=timeout_s,
        with_dashboard=with_dashboard,
        metrics_host=metrics_host,
    )
    head = state.head
    click.echo(f"cluster {name} started ({state.kind}): head {head.address}, {workers} worker(s)")
    if head.dashboard_url:
        click.echo(f"  dashboard:  {head.dashboard_url} (asks for the cluster's token)")
    if head.prometheus_url:
        click.echo(f"  prometheus: {head.prometheus_url}")
    click.echo(f"  state:      {state.directory}")
    click.echo(f"run on it with: matrix run WORKFLOW --cluster {name}")


@cluster.command("add-workers")
@click.argument("name")
@click.argument("count", type=click.IntRange(min=1))
@TIMEOUT
def add_workers(name: str, count: int, timeout_s: float) -> None:
    """Start COUNT more worker nodes on cluster NAME."""
    from matrix_core.cluster import control

    jobs = control.add_workers(name, count, timeout_s)
    click.echo(f"cluster {name}: {count} worker(s) joined (jobs {', '.join(jobs)})")


@cluster.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(name: str, as_json: bool) -> None:
    """Jobs, live nodes, CPUs/GPUs free and the dashboard URL of cluster NAME."""
    from matrix_core.cluster import control

    report = control.status(name)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Cluster {name} ({report['kind']})", show_header=False)
    head = report["head"] or {}
    ray = report["ray"]
    rows = [
        ("state", f"stopped at {report['stopped']}" if report["stopped"] else "running"),
        ("head", head.get("address", "-")),
        ("jobs", ", ".join(f"{job} {state}" for job, state in report["jobs"].items()) or "-"),
        ("nodes alive", str(ray["nodes_alive"]) if ray else "-"),
        ("CPUs free", f"{ray['cpus_free']:g} / {ray['cpus']:g}" if ray else "-"),
        ("GPUs free", f"{ray['gpus_free']:g} / {ray['gpus']:g}" if ray else "-"),
        ("dashboard", head.get("dashboard_url") or "-"),
        ("prometheus", head.get("prometheus_url") or "-"),
        ("directory", report["directory"]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


@cluster.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """Every cluster Matrix knows of."""
    from matrix_core.cluster.state import list_clusters

    states = list_clusters()
    if as_json:
        click.echo(json.dumps([state.to_json() for state in states], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Clusters")
    for column in ("Name", "Kind", "State", "Head", "Jobs", "Dashboard"):
        table.add_column(column)
    for state in states:
        head = state.head
        table.add_row(
            state.name,
            state.kind,
            "stopped" if state.stopped else "running",
            head.address if head else "-",
            ", ".join(job for job in [state.head_job, *state.worker_jobs] if job),
            (head.dashboard_url if head else None) or "-",
        )
    Console().print(table)


@cluster.command()
@click.argument("name")
def stop(name: str) -> None:
    """Stop cluster NAME: cancel every job it started (for --local, stop its own node processes), nothing else."""
    from matrix_core.cluster import control

    jobs = control.stop_cluster(name)
    click.echo(f"cluster {name} stopped ({len(jobs)} job(s): {', '.join(jobs) or 'none'})")
