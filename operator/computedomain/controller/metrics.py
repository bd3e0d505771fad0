"""Prometheus metrics of the controller (served on /metrics by `computedomain.endpoints`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = Counter("computedomain_reconcile_total", "Reconciles of ComputeDomains, by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "computedomain_reconcile_duration_seconds",
    "Time one reconcile of one ComputeDomain took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILE_ERRORS = Counter(
    "computedomain_reconcile_errors_total",
    "Reconciles that failed and will be retried, by reason.",
    ["reason"],
)
DOMAINS = Gauge("computedomain_domains", "ComputeDomains known to the controller, by status.", ["status"])
API_WRITES = Counter(
    "computedomain_api_writes_total", "Write requests sent to the API server, by verb.", ["verb"]
)
QUEUE_DEPTH = Gauge("computedomain_queue_depth", "ComputeDomains waiting to be reconciled.")
LEADER = Gauge("computedomain_leader", "1 while this replica holds the leader Lease.")


def count_write(verb: str) -> None:
    """The API client's write hook: count one write request by its verb."""
    API_WRITES.labels(verb=verb).inc()


# Per cached kind: (objects, encoded bytes). Set while leading (the caches live as long as a term).
CacheFigures = Callable[[], dict[str, tuple[int, int]]]


class CacheCollector(Collector):
    """`computedomain_cache_objects{kind}` and `computedomain_cache_bytes{kind}`, read at scrape time
    from counts the caches keep anyway (no walk over the objects)."""

    def __init__(self) -> None:
        self.figures: CacheFigures | None = None

    def collect(self) -> Iterable[Metric]:
        """The two gauge families, empty while no caches exist."""
        objects = GaugeMetricFamily(
            "computedomain_cache_objects",
            "Objects held in the controller's caches, by kind.",
            labels=["kind"],
        )
        size = GaugeMetricFamily(
            "computedomain_cache_bytes",
            "Bytes of the objects held in the controller's caches (as stored: compact JSON), by kind.",
            labels=["kind"],
        )
        for kind, (count, stored) in sorted((self.figures() if self.figures else {}).items()):
            objects.add_metric([kind], count)
            size.add_metric([kind], stored)
        yield objects
        yield size


CACHES = CacheCollector()
REGISTRY.register(CACHES)
