"""``matrix metrics``: a live summary of a run's metrics (tasks, tokens, per-role latency) for users without
Grafana, read from a cluster's Prometheus or straight from Ray's exporters."""

from __future__ import annotations

import time
from typing import Any

import click


@click.command()
@click.option("--cluster", metavar="NAME", help="A cluster started with `matrix cluster start`.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="HOST:PORT", help="A Ray metrics exporter; repeat.")
@click.option("--prometheus", "prometheus_url", metavar="URL", help="A Prometheus server scraping the cluster.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Seconds between refreshes."
)
@click.option("--once", is_flag=True, help="Print one summary (rates over one --interval) and exit.")
def metrics(
    cluster: str | None, endpoints: tuple[str, ...], prometheus_url: str | None, interval: float, once: bool
) -> None:
    """Summarize Matrix's metrics: tasks/s, tokens/s, in flight, error rate, per-role steps and latency."""
    from matrix_core.cluster.metrics import read

    source = _source(cluster, endpoints, prometheus_url)
    previous = read(source)
    if once:
        time.sleep(interval)
        from rich.console import Console

        Console().print(*_tables(previous, read(source)))
        return
    from rich.console import Group
    from rich.live import Live

    with Live(Group(*_tables(None, previous)), refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(interval)
                current = read(source)
                live.update(Group(*_tables(previous, current)))
                previous = current
        except KeyboardInterrupt:
            pass


def _source(cluster: str | None, endpoints: tuple[str, ...], prometheus_url: str | None) -> Any:
    from matrix_core.cluster.metrics import Source
    from matrix_core.cluster.state import load
    from matrix_core.errors import UsageError

    if sum(map(bool, (cluster, endpoints, prometheus_url))) != 1:
        raise UsageError("give exactly one of --cluster NAME, --endpoint HOST:PORT or --prometheus URL")
    if cluster:
        return Source.for_cluster(load(cluster))
    return Source(endpoints=endpoints, prometheus_url=prometheus_url)


def _tables(previous: Any, current: Any) -> list[Any]:
    from rich.table import Table

    from matrix_core.cluster.metrics import quantile

    elapsed = current.taken - previous.taken if previous else 0.0

    def rate(metric: str, *labels: str) -> str:
        if not elapsed:
            return "-"
        return f"{max(current.total(metric, *labels) - previous.total(metric, *labels), 0) / elapsed:,.1f}"

    tasks = Table(title="Tasks", title_justify="left")
    for column in ("", "total", "per s"):
        tasks.add_column(column, justify="right" if column else "left")
    tasks.add_row("admitted", f"{current.total('tasks_admitted'):,.0f}", rate("tasks_admitted"))
    tasks.add_row("in flight", f"{current.gauges.get(('tasks_in_flight', ()), 0):,.0f}", "")
    finished = current.keys("tasks_finished")
    for (status,) in finished:
        tasks.add_row(
            f"finished: {status}", f"{current.total('tasks_finished', status):,.0f}", rate("tasks_finished", status)
        )
    done = sum(current.total("tasks_finished", *labels) for labels in finished)
    errors = current.total("tasks_finished", "error")
    tasks.add_row("error rate", f"{100 * errors / done:.1f}%" if done else "-", "")

    roles = Table(title="Roles (step times in seconds)", title_justify="left")
    columns = ("role", "steps", "/s", "tok in", "tok out", "tok/s", "mean", "p50", "p95", "inbox", "retry", "err")
    for column in columns:
        roles.add_column(column, justify="left" if column == "role" else "right")
    for (role,) in current.keys("hops"):
        count = current.latency_count.get(role, 0.0)
        p50, p95 = quantile(current, role, 0.5), quantile(current, role, 0.95)
        tokens_rate = "-"
        if elapsed:
            tokens_now = current.total("tokens", role, "prompt") + current.total("tokens", role, "completion")
            tokens_then = previous.total("tokens", role, "prompt") + previous.total("tokens", role, "completion")
            tokens_rate = f"{max(tokens_now - tokens_then, 0) / elapsed:,.1f}"
        roles.add_row(
            role,
            f"{current.total('hops', role):,.0f}",
            rate("hops", role),
            f"{current.total('tokens', role, 'prompt'):,.0f}",
            f"{current.total('tokens', role, 'completion'):,.0f}",
            tokens_rate,
            f"{current.latency_sum.get(role, 0.0) / count:.2g}" if count else "-",
            f"{p50:.2g}" if p50 is not None else "-",
            f"{p95:.2g}" if p95 is not None else "-",
            f"{current.gauges.get(('inbox_depth', (role,)), 0):,.0f}",
            f"{current.total('retries', role):,.0f}",
            f"{current.total('step_errors', role):,.0f}",
        )
    return [tasks, roles]
