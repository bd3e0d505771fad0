"""Prometheus metrics of the ComputeDomain driver (the framework's own are in `kubelet.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREPARES = Counter(
    "computedomain_plugin_prepares_total",
    "Claims the kubelet asked to prepare, by result (prepared, cached, error).",
    ["result"],
)
UNPREPARES = Counter("computedomain_plugin_unprepares_total", "Claims unprepared.")
PREPARE_SECONDS = Histogram(
    "computedomain_plugin_prepare_seconds",
    "Seconds from a prepare call's start to the claim's CDI spec on disk.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 45),
)
UNPREPARE_SECONDS = Histogram(
    "computedomain_plugin_unprepare_seconds",
    "Seconds one claim's unprepare took (its CDI spec and checkpoint entry removed).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
CLAIM_ERRORS = Counter(
    "computedomain_plugin_claim_errors_total",
    "Claims answered with an error, by call (prepare, unprepare) and reason (see plugin.core.ErrorReason).",
    ["call", "reason"],
)
GATE_SECONDS = Histogram(
    "computedomain_plugin_daemon_wait_seconds",
    "Seconds a channel claim waited for this node's IMEX daemon.",
    buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 45),
)
PREPARED_CLAIMS = Gauge("computedomain_plugin_prepared_claims", "Claims in the checkpoint.")
DOMAIN_LOOKUPS = Counter(
    "computedomain_plugin_domain_lookups_total",
    "ComputeDomains found by UID, by the read that answered (cache, named, namespace, cluster) or none.",
    ["read"],
)
