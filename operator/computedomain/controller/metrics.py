"""Prometheus metrics of the controller (served on /metrics by `computedomain.endpoints`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
