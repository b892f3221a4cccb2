"""The engine's Prometheus metrics: exact values after a run, the reader behind `matrix metrics`, and the Grafana
dashboard's queries against the metrics the engine defines."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from test_engine import run_toy

from matrix_core.cluster.metrics import Snapshot, Source, _add, quantile, read
from matrix_core.engine import telemetry

ROOT = Path(__file__).parents[1]


def defined_metrics() -> dict[str, str]:
    """``matrix_*`` name -> Counter/Gauge/Histogram, as matrix_core/engine/telemetry.py defines them."""
    source = Path(telemetry.__file__).read_text()
    return dict((name, kind) for kind, name in re.findall(r"metrics\.(Counter|Gauge|Histogram)\(\s*\"(\w+)\"", source))


def test_a_runs_counters_reach_the_endpoint_with_their_values(toy, ray_session, tmp_path):
    source = Source(endpoints=(f"127.0.0.1:{ray_session}",))
    before = read(source)
    failing = ["agents.b.always_fail_ids=[t3]", "run.max_retries=1", "run.retry_backoff_s=0.01"]
    metrics, _ = run_toy(toy, tmp_path, *failing, rows=10)
    assert metrics.status == {"success": 9, "error": 1}

    def delta(after: Snapshot, metric: str, *labels: str) -> float:
        return after.total(metric, *labels) - before.total(metric, *labels)

    expected = {
        ("tasks_admitted",): 10,
        ("tasks_finished", "success"): 9,
        ("tasks_finished", "error"): 1,
        ("step_errors", "b"): 1,
        ("retries", "b"): 1,  # t3 failed at b, was retried once, then failed for good
        ("hops", "c"): 9 * 2,
        ("hops", "a"): 9 * 2 + 1,
        ("tokens", "c", "prompt"): 9 * 2 * 3,
        ("tokens", "c", "completion"): 9 * 2 * 5,
    }

    def measured() -> dict[tuple[str, ...], float]:
        after = read(source)
        values = {key: delta(after, *key) for key in expected}
        values["latency_count", "c"] = after.latency_count["c"] - before.latency_count["c"]
        return values

    expected["latency_count", "c"] = 9 * 2
    deadline = time.monotonic() + 60
    while (values := measured()) != expected and time.monotonic() < deadline:
        time.sleep(1)  # every actor exports its metrics on its own few-second schedule
    assert values == expected


EXPOSITION = """\
# TYPE ray_matrix_hops_total counter
ray_matrix_hops_total{WorkerId="w1",role="a"} 4.0
ray_matrix_hops_total{WorkerId="w2",role="a"} 6.0
ray_matrix_tasks_finished_total{status="success"} 7
ray_matrix_inbox_depth{role="a",actor="x"} 2
ray_matrix_inbox_depth{role="a",actor="y"} 3
# TYPE ray_matrix_step_seconds_bucket untyped
ray_matrix_step_seconds_bucket{role="a",le="0.1"} 2
ray_matrix_step_seconds_bucket{role="a",le="1.0"} 10
ray_matrix_step_seconds_bucket{role="a",le="+Inf"} 10
ray_matrix_step_seconds_sum{role="a"} 4.5
ray_matrix_step_seconds_count{role="a"} 10
ray_node_cpu_utilization{ip="1"} 50
"""


def test_the_reader_sums_over_nodes_and_actors():
    snapshot = Snapshot(taken=0.0)
    _add(snapshot, EXPOSITION)
    assert snapshot.total("hops", "a") == 10
    assert snapshot.total("tasks_finished", "success") == 7
    assert snapshot.gauges[("inbox_depth", ("a",))] == 5
    assert snapshot.latency_sum["a"] == 4.5 and snapshot.latency_count["a"] == 10
    assert quantile(snapshot, "a", 0.5) == 0.1 + (1.0 - 0.1) * (5 - 2) / (10 - 2)
    assert quantile(snapshot, "b", 0.5) is None


def test_the_dashboard_queries_only_metrics_the_engine_defines():
    dashboard = json.loads((ROOT / "dashboards" / "matrix.json").read_text())
    defined = defined_metrics()
    assert {"matrix_tokens", "matrix_tasks_finished", "matrix_step_seconds", "matrix_tasks_in_flight"} <= set(defined)
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for wanted in ("tokens/s", "tasks/s", "in flight", "error rate", "latency"):
        assert wanted in titles
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"ray_(matrix_\w+)", target["expr"]):
                base, suffix = re.match(r"(.+?)(_total|_bucket|_sum|_count)?$", name).groups()
                kind = {"_total": "Counter", None: "Gauge"}.get(suffix, "Histogram")
                assert defined.get(base) == kind, f"{panel['title']}: {name} is not a {kind} the engine defines"
                used.add(base)
    assert used == set(defined), f"metrics without a panel: {set(defined) - used}"
