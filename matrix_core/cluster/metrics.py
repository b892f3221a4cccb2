"""Reading a run's metrics back: from Ray's Prometheus exporters (one per node) or from a Prometheus server's
``/federate`` endpoint, both in Prometheus' text format, summed over nodes and actors into a :class:`Snapshot`.
Plain ``urllib``: one GET per endpoint every few seconds needs no client library."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from matrix_core.cluster.state import ClusterError, ClusterState

PREFIX = "ray_matrix_"
FEDERATE_MATCH = '{__name__=~"ray_matrix_.*"}'


@dataclass(frozen=True)
class Source:
    """Where to read: Ray exporters (``HOST:PORT``) or a Prometheus server's URL."""

    endpoints: tuple[str, ...] = ()
    prometheus_url: str | None = None

    @classmethod
    def for_cluster(cls, state: ClusterState) -> Source:
        """The cluster's Prometheus when it runs one, else every node's exporter (as the head last listed them)."""
        head = state.head
        if head is None or state.stopped:
            raise ClusterError(f"cluster {state.name!r} is not running", hint=f"matrix cluster status {state.name}")
        if head.prometheus_url:
            return cls(prometheus_url=head.prometheus_url)
        targets_file = state.directory / "metrics_targets.json"
        endpoints = {head.metrics_endpoint}
        if targets_file.exists():
            for group in json.loads(targets_file.read_text()):
                endpoints.update(group["targets"])
        return cls(endpoints=tuple(sorted(endpoints)))

    def urls(self) -> list[str]:
        if self.prometheus_url:
            query = urllib.parse.urlencode({"match[]": FEDERATE_MATCH})
            return [f"{self.prometheus_url.rstrip('/')}/federate?{query}"]
        return [endpoint if "://" in endpoint else f"http://{endpoint}/metrics" for endpoint in self.endpoints]


@dataclass
class Snapshot:
    """Matrix's series at one moment, summed over nodes and actors, keyed by metric and the labels kept."""

    taken: float
    counters: dict[tuple[str, tuple[str, ...]], float] = field(default_factory=lambda: defaultdict(float))
    gauges: dict[tuple[str, tuple[str, ...]], float] = field(default_factory=lambda: defaultdict(float))
    buckets: dict[tuple[str, float], float] = field(default_factory=lambda: defaultdict(float))
    """``(role, upper bound)`` -> cumulative count of ``matrix_step_seconds``."""
    latency_sum: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency_count: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def total(self, metric: str, *labels: str) -> float:
        return self.counters.get((metric, labels), 0.0)

    def keys(self, metric: str) -> list[tuple[str, ...]]:
        return sorted(labels for name, labels in [*self.counters, *self.gauges] if name == metric)


COUNTERS = {
    "tasks_admitted": (),
    "tasks_finished": ("status",),
    "hops": ("role",),
    "tokens": ("role", "kind"),
    "retries": ("role",),
    "step_errors": ("role",),
}
"""Each counter and the labels it is summed by (over nodes, actors and the rest)."""
GAUGES = {"tasks_in_flight": (), "inbox_depth": ("role",)}
HISTOGRAM = "step_seconds"


def read(source: Source, timeout_s: float = 10.0) -> Snapshot:
    """Scrape every URL of ``source`` once; an endpoint that does not answer is a one-line error."""
    snapshot = Snapshot(taken=time.monotonic())
    for url in source.urls():
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                text = response.read().decode()
        except OSError as error:
            raise ClusterError(f"cannot read metrics from {url}: {error}") from None
        _add(snapshot, text)
    return snapshot


def _add(snapshot: Snapshot, text: str) -> None:
    """Add every Matrix sample of ``text``, by sample name: Prometheus' ``/federate`` serves them untyped."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(PREFIX):
                continue
            name = sample.name.removeprefix(PREFIX)
            base, _, part = name.rpartition("_")
            if base == HISTOGRAM:
                role = sample.labels.get("role", "")
                if part == "bucket":
                    snapshot.buckets[(role, float(sample.labels["le"]))] += sample.value
                elif part == "sum":
                    snapshot.latency_sum[role] += sample.value
                elif part == "count":
                    snapshot.latency_count[role] += sample.value
            elif part == "total" and base in COUNTERS:
                snapshot.counters[(base, tuple(sample.labels.get(k, "") for k in COUNTERS[base]))] += sample.value
            elif name in GAUGES:
                snapshot.gauges[(name, tuple(sample.labels.get(k, "") for k in GAUGES[name]))] += sample.value


def quantile(snapshot: Snapshot, role: str, q: float) -> float | None:
    """The ``q`` quantile of a role's step time, interpolated within histogram buckets as Prometheus does."""
    bounds = sorted((bound, count) for (r, bound), count in snapshot.buckets.items() if r == role)
    if not bounds or bounds[-1][1] == 0:
        return None
    rank = q * bounds[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return None
