"""Prometheus metrics of the controller (served on /metrics by `computedomain.endpoints`)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any

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
FORMATION_SECONDS = Histogram(
    "computedomain_domain_formation_seconds",
    "Seconds from a ComputeDomain's creation to the first status that says it is Ready with its "
    "nodes joined; once per domain, only for domains this process saw before they were.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)


def count_write(verb: str) -> None:
    """The API client's write hook: count one write request by its verb."""
    API_WRITES.labels(verb=verb).inc()


def formed(status: Mapping[str, Any]) -> bool:
    """Whether a domain's status says it formed: Ready with at least one node joined. A domain that
    awaits no node (numNodes 0) is Ready from the start, and that says nothing about its IMEX."""
    return status.get("status") == "Ready" and bool(status.get("joinedNodes"))


def seconds_since(timestamp: str, now: float) -> float | None:
    """Seconds from an RFC 3339 `timestamp` (creationTimestamp) to `now` (epoch seconds), not below
    zero (the API server's clock and ours may differ); None when it cannot be read."""
    try:
        then = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if then.tzinfo is None:
        return None
    return max(0.0, now - then.timestamp())


class Formation:
    """Observes each domain's formation time (creation to `formed`) once per controller process.

    Only a domain this process first saw unformed is observed, when a status it renders is formed: a
    domain already formed when first seen (by a restarted controller, or a replica that just took
    the lease) formed earlier, at a time nobody recorded. A domain seen unformed after a restart is
    counted from its creation even if it had formed before (it lost a node meanwhile), as nothing
    on the object says so. Kept across leadership terms, so that a replica that leads again does
    not observe a domain twice; a deleted domain is forgotten.
    """

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._settled: set[str] = set()

    def see(self, uid: str, created: str, before: bool, after: bool, now: float) -> float | None:
        """One status of the domain: `before` the live one was formed, `after` the one written
        now is; the seconds observed, or None when this is not the domain's formation."""
        if uid in self._settled:
            return None
        if before:
            self._settled.add(uid)
            return None
        if not after:
            return None
        self._settled.add(uid)
        seconds = seconds_since(created, now)
        if seconds is not None:
            self.histogram.observe(seconds)
        return seconds

    def forget(self, uid: str) -> None:
        """The domain is gone."""
        self._settled.discard(uid)


FORMATION = Formation(FORMATION_SECONDS)


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
